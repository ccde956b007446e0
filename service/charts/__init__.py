"""Chart images of a run or a preview: ``data`` gathers what to draw, ``draw`` draws it.

Split so that reading the database never waits on matplotlib's import (slow: it is
imported only when the first chart is drawn) and drawing never touches the database.
"""
