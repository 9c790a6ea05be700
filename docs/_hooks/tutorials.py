"""MkDocs hook: publish the notebooks of ``tutorials/`` under ``tutorials/`` in the site.

The notebooks live at the repository root (CI executes them there); this adds them to
the documentation files without copying or symlinking, before mkdocs-jupyter turns them
into pages (rendered as they are in git, without executing them).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


@event_priority(100)  # before mkdocs-jupyter's on_files wraps the notebooks
def on_files(files: Files, config) -> Files:
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        # a regular file whose source folder is the repository root: its page path is
        # tutorials/<name>, and mkdocs-jupyter reads it from abs_src_path
        files.append(File(f"tutorials/{nb.name}", src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
