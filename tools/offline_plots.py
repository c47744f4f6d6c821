"""Write an HTML template for `dvc plots show/diff` that works offline and draws charts as SVG.

DVC's default page loads Vega from a CDN, so on a machine without internet its charts stay blank.
This template inlines the Vega libraries pinned in `tools/plots/package.json` (installed with
`npm ci --prefix tools/plots`) and asks Vega for SVG, so a rendered page can also be inspected.

    python -m tools.offline_plots            # writes .dvc/tmp/offline-plots.html
    dvc plots show --html-template .dvc/tmp/offline-plots.html
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).parent / "plots"
LIBRARIES = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")
DEFAULT_OUTPUT = Path(".dvc/tmp/offline-plots.html")
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
    parser = argparse.ArgumentParser(prog="python -m tools.offline_plots", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    args = parser.parse_args(argv)
    modules = PACKAGE_DIR / "node_modules"
    if not all((modules / library).is_file() for library in LIBRARIES):
        install = ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(PACKAGE_DIR)]
        if subprocess.run(install, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"offline_plots: error: '{' '.join(install)}' failed", file=sys.stderr)
            return 1
    sources = [(modules / library).read_text(encoding="utf-8") for library in LIBRARIES]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(template(sources), encoding="utf-8")
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
