#!/usr/bin/env python3
"""Rewrites the module graph block of docs/architecture.md from scripts/module-graph.sh."""
import pathlib, subprocess
root = pathlib.Path(__file__).resolve().parent.parent
graph = subprocess.check_output(["bash", str(root / "scripts/module-graph.sh")], text=True)
doc = root / "docs/architecture.md"
text = doc.read_text()
begin, end = "<!-- module-graph: begin -->\n", "<!-- module-graph: end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
doc.write_text(head + begin + "```text\n" + graph + "```\n" + end + tail)
print("updated", doc)
