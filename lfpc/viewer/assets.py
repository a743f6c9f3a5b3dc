"""The inline stylesheet and filter script of the report (no external resources: the page opens from disk)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #222; }
h2 { border-bottom: 1px solid #ccc; }
table.overview { border-collapse: collapse; margin-bottom: 1em; }
table.overview td, table.overview th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.overview img { height: 48px; margin-right: 2px; }
#filters { position: sticky; top: 0; background: #f6f6f6; padding: 6px; z-index: 2; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.traj { border: 2px solid #bbb; border-radius: 6px; padding: 6px; width: 360px; font-size: 12px; }
.traj.correct { border-color: #2a2; } .traj.wrong { border-color: #c33; }
.view { position: relative; width: 100%; background: #eee; }
.view img, .view svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
.view rect { fill: none; vector-effect: non-scaling-stroke; }
.view rect.pred { stroke: #e00; stroke-width: 3; } .view rect.gt { stroke: #0a0; stroke-width: 3; }
.view rect.invalid { stroke: #f90; stroke-width: 2; stroke-dasharray: 6 3; }
.view text { fill: #e00; font-weight: bold; }
.crops { display: flex; flex-wrap: wrap; gap: 4px; margin: 4px 0; }
.crops figure { margin: 0; } .crops img { max-height: 110px; border: 1px solid #999; }
.crops figcaption { font-size: 10px; }
pre { white-space: pre-wrap; word-break: break-word; background: #f8f8f8; margin: 2px 0; padding: 3px; }
.error { color: #c33; } .legend .pred { color: #e00; } .legend .gt { color: #0a0; } .legend .invalid { color: #f90; }
table.scores td { padding: 0 4px; }
.question { margin-bottom: 1.5em; }
.side-by-side { flex-wrap: nowrap; overflow-x: auto; margin-bottom: 10px; }
.side-by-side .traj { flex: 0 0 300px; width: 300px; }
"""

SCRIPT = """
function applyFilters() {
  const want = {};
  for (const select of document.querySelectorAll('#filters select')) want[select.name] = select.value;
  let shown = 0;
  for (const card of document.querySelectorAll('.traj')) {
    const ok = Object.keys(want).every(k => want[k] === 'all' || card.dataset[k] === want[k]);
    card.hidden = !ok;
    if (ok) shown += 1;
  }
  for (const section of document.querySelectorAll('section.group')) {
    section.hidden = section.querySelectorAll('.traj:not([hidden])').length === 0;
  }
  document.getElementById('shown').textContent = shown;
}
document.addEventListener('DOMContentLoaded', () => {
  const query = new URLSearchParams(location.search);  // e.g. trajectories.html?outcome=wrong&crops=with
  for (const select of document.querySelectorAll('#filters select')) {
    if (query.has(select.name)) select.value = query.get(select.name);
    select.addEventListener('change', applyFilters);
  }
  applyFilters();
});
"""
