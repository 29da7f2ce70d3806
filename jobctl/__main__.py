from jobctl.cli import main

main(prog_name="jobctl")
