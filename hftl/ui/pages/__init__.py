"""One module per page of `hftl ui`; each has `build(context, pages)`, which lays out the page inside the current
`gr.Tab` and records the components other pages wire to in `pages` (a dict: "page.component" -> component)."""
