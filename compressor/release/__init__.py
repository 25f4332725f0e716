"""The release side: the manifest a run writes, the budgets and gate that judge it, and the report and gallery
made from it. Everything here reads what a run recorded; nothing recomputes a measurement."""
