"""Side-by-side benchmarks of budget forcing (GitHub issue 6): ``python -m bench --help``.

Every comparison runs both contenders in one process on one engine, alternating them over
repeats, so machine noise hits both alike and the *ratio* (time of ours / time of the other)
is the figure to read; absolute times on a shared 2-core CPU are not.
"""
