"""The page's look and its few lines of browser script: the layout on a desktop and on a phone, results scaled up
pixel for pixel, the painter's empty state, and what an example's click or Edit does before the server answers."""

from __future__ import annotations

import json

PHONE = "(max-width: 1023px)"  # narrower, the columns stack: the result right under Edit, the settings after it

NOTHING_TO_PAINT = "Upload a photo above: it appears here, to paint where the edit may act."

# The results stay in view: beside the settings on a desktop (a sticky column, short enough for a laptop's window with
# the solver's detail folded away; the page's container clips instead of hiding overflow, which would stop anything
# sticking), right under Edit on a phone. Results smaller than their box are scaled up pixel for pixel (the page
# script marks them ``upscaled``; the file downloaded stays the real size), under their label and buttons, not beneath.
CSS = f"""
.gradio-container {{ overflow: clip !important; }}
#page-script {{ display: none; }}
@media (min-width: 1024px) {{
  #results {{ position: sticky; top: 8px; align-self: flex-start; }}
}}
@media {PHONE} {{
  #main {{ flex-direction: column; }}
  #inputs-column {{ display: contents; }}
  #inputs {{ order: 1; }}
  #results {{ order: 2; }}
  #examples {{ order: 3; }}
  #settings {{ order: 4; }}
  #images {{ flex-wrap: nowrap; }}
  #images > .block {{ min-width: 0 !important; height: 220px !important; }}
  #results #reconstruction .image-container {{ padding-top: 4.4rem; }}  /* its label wraps to three lines there */
  #mask-and-summary {{ flex-direction: column; }}
  #mask-and-summary > * {{ flex: none; }}
  #summary {{ order: -1; }}
}}
#results {{ min-width: 0; max-width: 100%; }}
#results .image-container {{ padding-top: 2.4rem; }}
#results label[data-testid="block-label"] {{ max-width: calc(100% - 4.5rem); }}
#details-accordion {{ overflow-x: auto; }}
#results .image-frame img.upscaled {{
  width: 100%; height: 100%; max-width: none; object-fit: contain; image-rendering: pixelated;
}}
#painter .empty.wrap div {{ display: none; }}
#painter .empty.wrap::after {{ content: {json.dumps(NOTHING_TO_PAINT)}; }}
#examples table {{ table-layout: fixed; width: 100%; }}
#examples td, #examples th {{ white-space: normal; overflow-wrap: anywhere; }}
"""

# Marks each result image that is smaller than its box both ways (CSS scales those up, pixel for pixel).
PAGE_SCRIPT = """
document.addEventListener('load', (event) => {
  const img = event.target;
  if (!(img instanceof HTMLImageElement) || !img.closest('#results .image-frame')) return;
  const box = img.closest('.image-container');
  img.classList.toggle('upscaled', img.naturalWidth < box.clientWidth && img.naturalHeight < box.clientHeight);
}, true);
"""

# After an example is clicked: the result cleared (in the page, before the server answers) and brought into view.
SHOW_RESULT = """
const edited = document.querySelector('#edited');
const box = edited && edited.getBoundingClientRect();
if (box && (box.top < 0 || box.bottom > window.innerHeight)) edited.scrollIntoView({block: 'start'});
"""

# On a phone, Edit (and Edit this result) scroll Edit to the window's top when the slider under the result would not
# show whole: the result, and the slider under it, then come in view under the button.
SHOW_EDIT = f"""() => {{
  const slider = document.querySelector('#before-after'), button = document.querySelector('#edit-button');
  if (!slider || !button || !window.matchMedia('{PHONE}').matches) return;
  const box = slider.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) button.scrollIntoView({{block: 'start', behavior: 'instant'}});
}}"""

KEEP_TYPED = "(suggested, typed) => (typed && typed.trim()) || !suggested ? typed : suggested"  # in the page, at once
