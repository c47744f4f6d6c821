"""Make `dvc plots show/diff` draw offline: a page template with the Vega libraries inlined, made this clone's default.

DVC's default page loads Vega from a CDN, so on a machine without internet its charts stay blank.
This template inlines the Vega libraries pinned in `fmnist/plots_page/package.json` (installed with
`npm ci --prefix fmnist/plots_page`) and asks Vega for SVG, so a rendered page can also be inspected.
It then sets `plots.html_template` in `.dvc/config.local` (this clone only, never committed): a
committed setting would break `dvc plots` in every clone that has not built the page, because DVC
3.67.1 takes a template path that does not exist as the template's text and fails on it. Without
the page (no npm), DVC keeps its own page, which needs internet.

    make plots          # or, from the repository root: python -m fmnist.offline_plots
    dvc plots show      # now writes dvc_plots/index.html with the libraries inlined
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dvc.cli import main as dvc_main

from fmnist.atomic import atomic_file

PACKAGE_DIR = Path(__file__).parent / "plots_page"
LIBRARIES = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")
DVC_DIR = Path(".dvc")
# Ignored, beside node_modules; not in .dvc/tmp, which people delete to clear DVC locks (leaving the setting dangling).
DEFAULT_OUTPUT = Path("fmnist/plots_page/offline-plots.html")
# DVC's page calls vegaEmbed(element, spec) itself; default every call to the SVG renderer.
SVG_BY_DEFAULT = """
const embedWithCanvas = vegaEmbed;
vegaEmbed = (element, spec, options) => embedWithCanvas(element, spec, {renderer: "svg", ...options});
"""


def template(libraries: Sequence[str]) -> str:
    """A page with DVC's `{plot_divs}` placeholder; `</script` is escaped so no script ends early."""
    scripts = "\n".join("<script>" + source.replace("</script", "<\\/script") + "</script>" for source in libraries)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset='utf-8'>\n<title>DVC plots</title>\n"
        f"{scripts}\n<script>{SVG_BY_DEFAULT}</script>\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmnist.offline_plots", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    args = parser.parse_args(argv)
    if not DVC_DIR.is_dir():
        print(
            f"offline_plots: error: no {DVC_DIR} directory in {Path.cwd()} (run from the repository root)",
            file=sys.stderr,
        )
        return 1
    modules = PACKAGE_DIR / "node_modules"
    if not all((modules / library).is_file() for library in LIBRARIES):
        install = ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(PACKAGE_DIR)]
        if subprocess.run(install, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"offline_plots: error: '{' '.join(install)}' failed", file=sys.stderr)
            return 1
    sources = [(modules / library).read_text(encoding="utf-8") for library in LIBRARIES]
    with atomic_file(args.output) as temporary:
        temporary.write_text(template(sources), encoding="utf-8")
    # DVC reads a relative html_template from the .dvc directory; relative, the setting survives moving the clone.
    setting = os.path.relpath(args.output.resolve(), DVC_DIR.resolve())
    if dvc_main(["config", "--local", "plots.html_template", setting]) != 0:
        return 1
    print(f"offline_plots: wrote {args.output}, now the page of `dvc plots show/diff` (.dvc/config.local)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
