"""Pipeline options, assembly and the ``copydesk`` command line."""
