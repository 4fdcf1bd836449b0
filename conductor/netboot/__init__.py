"""Network boot services the appliance runs: TFTP, HTTP boot files, boot config rendering."""
