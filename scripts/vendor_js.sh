#!/usr/bin/env bash
# Vendor the JavaScript that pages with ipywidgets need, so that they render
# with no network: RequireJS and @jupyter-widgets/html-manager's embed bundle
# (with its font files), from npm into _vendor/static/widgets/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=_vendor/static/widgets
# RequireJS resolves the bundle's chunks and fonts under its baseUrl with the
# npm layout, so the bundle keeps that layout below $dest.
bundle="$dest/@jupyter-widgets/html-manager/dist"
if [ -f "$bundle/embed-amd.js" ] && [ -f "$dest/require.min.js" ] && [ -f "$dest/require-config.js" ]; then
  exit 0
fi
work=_vendor/npm
mkdir -p "$work" "$bundle"
npm install --prefix "$work" --no-audit --no-fund --silent \
  @jupyter-widgets/html-manager@1.0.7 requirejs@2.3.8
dist="$work/node_modules/@jupyter-widgets/html-manager/dist"
# Everything the embed bundle loads at run time, without source maps.
find "$dist" -maxdepth 1 -type f ! -name '*.map' -exec cp {} "$bundle/" \;
# html-manager 1.x typesets widget labels with MathJax 2's API
# (MathJax.Hub.Queue); the site runs MathJax 3, where that throws. Use MathJax
# 3's typesetPromise when MathJax has loaded; before that, MathJax's own
# start-up typesets the whole page, widget labels included.
old='MathJax.Hub.Queue(["Typeset",MathJax.Hub,e])'
new='(MathJax.typesetPromise\&\&MathJax.typesetPromise([e]))'
grep -qF "$old" "$bundle/embed-amd.js" || { echo "vendor_js.sh: MathJax call not found in embed-amd.js" >&2; exit 1; }
sed -i "s/MathJax\.Hub\.Queue(\[\"Typeset\",MathJax\.Hub,e\])/$new/g" "$bundle"/*.js
! grep -qF "$old" "$bundle/embed-amd.js"
cp "$work/node_modules/requirejs/require.js" "$dest/require.min.js"
# Point RequireJS at this folder, wherever the page sits in the site.
cat > "$dest/require-config.js" <<'JS'
require.config({ baseUrl: (document.documentElement.dataset.content_root || "") + "_static/widgets/" });
JS
echo "vendored widget JavaScript into $dest ($(du -sh "$dest" | cut -f1))"
