"""Helpers shared by the test modules: tiny configurations, test doubles, table writers, entry-point runners.

Test modules import from here, never from each other (a test module imported by another would also have its
tests collected twice under some layouts, and its fixtures would leak).
"""
