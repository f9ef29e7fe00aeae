"""`hftl ui`: a local web app (Gradio) over a folder of runs: list, open, compare, try and train runs.

A thin face over the functions the command line calls (STYLE pattern 17): one module per page in `pages/`,
`runs_index` for what a run folder holds, `jobs` for `hftl train` subprocesses, `paths` for the one rule that
every path the browser names stays inside the root. Gradio is an optional extra: `pip install 'hftl[ui]'`.
"""
