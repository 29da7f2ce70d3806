"""`python -m jobd`: the same as the `jobd` command."""

from jobd.cli import main

main(prog_name="jobd")
