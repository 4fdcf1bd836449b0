"""Jinja2 templates for network boot (iPXE, PXELINUX, GRUB), shipped as package data."""
