"""jobctl: the command line for a running jobd (a thin layer over jobd.client)."""
