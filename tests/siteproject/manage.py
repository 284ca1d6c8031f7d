#!/usr/bin/env python
"""A minimal existing Django site with relay added as the README says (used by tests/e2e/test_install.py)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siteproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
