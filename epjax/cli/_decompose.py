"""``epjax decompose``: placeholder replaced below."""
