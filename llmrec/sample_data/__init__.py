"""The small real-data sample shipped with the package (see README.md; rebuilt by build.py)."""
