"""The leaderboard page's inline CSS and its one inline script (the page stays one self-contained file).

Layout, as a reader at 1400 px sees it: the overview first; each suite table beside its figures (a grid
that falls back to one column below 1000 px); wide tables scroll sideways inside their own box rather
than wrapping numbers (number cells never wrap, so seed-by-seed values stay on one line); every column
header sorts its table on click (numbers as numbers, empty cells last either way).
"""

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1680px;margin:1.5em auto;padding:0 1.5em;color:#222;line-height:1.4}
p,ul,details>p{max-width:78em}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{margin-top:1.5em}
nav a{margin-right:.8em}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.2em}
table{border-collapse:collapse;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top}
thead th{background:#f3f3f3;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}
td:first-child{white-space:nowrap}
.w{display:inline-block;min-width:15em;text-align:left}
td.n{white-space:nowrap;font-variant-numeric:tabular-nums}
.ci{color:#555}
th[data-col]{cursor:pointer;user-select:none}
th[data-col]::after{content:' \\2195';color:#aaa;font-weight:normal}
th[aria-sort=ascending]::after{content:' \\2191';color:#333}
th[aria-sort=descending]::after{content:' \\2193';color:#333}
#overview th.suite{text-align:center}
#overview tbody th{white-space:nowrap;background:#fff;position:sticky;left:0;font-weight:600}
#overview thead th:first-child{position:sticky;left:0;z-index:1}
.mark{font-size:.78em;padding:0 .3em;border-radius:3px;margin-left:.15em}
td.better .mark{background:#d7f0d7;color:#185c18}
td.worse .mark{background:#f6d5d5;color:#7a1b1b}
td.ref .mark{background:#e4e4e4;color:#444}
.legend{font-size:.9em;color:#444}
.group{display:grid;grid-template-columns:minmax(0,1fr) minmax(300px,38%);gap:1.5em;align-items:start}
.figures img{width:100%;height:auto;display:block;margin-bottom:.8em;border:1px solid #eee}
@media (max-width:1000px){.group{grid-template-columns:minmax(0,1fr)}}
code{background:#f5f5f5}
.reported td{color:#666}
details{margin:.4em 0}
"""

# Sort on a header click: rows by the column's data-v (else its text), numbers as numbers; empty last.
SORT_SCRIPT = """
function flowzooSort(th){
  var table=th.closest('table'),body=table.tBodies[0],col=+th.getAttribute('data-col');
  var asc=th.getAttribute('aria-sort')!=='ascending';
  table.querySelectorAll('th[aria-sort]').forEach(function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',asc?'ascending':'descending');
  function key(row){
    var c=row.cells[col];if(!c)return null;
    var v=c.hasAttribute('data-v')?c.getAttribute('data-v'):c.textContent.trim();
    if(v===''||v==='\\u2013')return null;
    var f=parseFloat(v.replace(/,/g,''));return isNaN(f)?v.toLowerCase():f;
  }
  var rows=Array.prototype.slice.call(body.rows).map(function(r,i){return [key(r),i,r];});
  rows.sort(function(a,b){
    if(a[0]===null||b[0]===null)return a[0]===null?(b[0]===null?a[1]-b[1]:1):-1;
    var d=(typeof a[0]==='number'&&typeof b[0]==='number')?a[0]-b[0]:String(a[0]).localeCompare(String(b[0]));
    return (asc?d:-d)||a[1]-b[1];
  });
  rows.forEach(function(r){body.appendChild(r[2]);});
}
document.addEventListener('click',function(e){
  var th=e.target.closest&&e.target.closest('th[data-col]');if(th)flowzooSort(th);
});
"""
