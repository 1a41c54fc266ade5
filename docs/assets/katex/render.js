// Typeset the math that pymdownx.arithmatex (generic mode) leaves in the page: each formula is
// an element of class "arithmatex" holding \(...\) (inline) or \[...\] (display). KaTeX is
// vendored beside this file, so the site needs no network to show its equations: KaTeX 0.19.1
// (MIT, see LICENSE) from the npm package katex, its dist/katex.min.js, dist/katex.min.css and
// the .woff2 fonts of dist/fonts/ (to update: npm pack katex@VERSION and copy the same files).
(function () {
  "use strict";
  function typeset() {
    for (const element of document.querySelectorAll(".arithmatex")) {
      const tex = element.textContent.trim();
      const display = tex.startsWith("\\[");
      if (!display && !tex.startsWith("\\(")) continue;
      katex.render(tex.slice(2, -2), element, { displayMode: display, throwOnError: false });
    }
  }
  // mkdocs-material publishes document$ (it re-fires on instant navigation); otherwise, on load.
  if (typeof document$ !== "undefined") document$.subscribe(typeset);
  else document.addEventListener("DOMContentLoaded", typeset);
})();
