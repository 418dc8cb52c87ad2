"""The console's inline CSS and script (no external asset: the console must work behind a firewall).

The script only wires the Run now / Preview buttons to the HTTP API (`POST activations/{id}/run`,
`.../preview`), carrying the page's `?code=` key, and writes answers with `textContent`, never HTML.
"""

STYLE = """
:root{--fg:#1b1f24;--muted:#4a5360;--line:#d5d9de;--bg:#fff;--head:#f3f5f7;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#16324f;color:#fff;padding:.6rem 1.2rem}
header a{color:#fff}
main{padding:1rem 1.2rem;max-width:1200px}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
a{color:var(--accent)}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:14px}
caption{text-align:left;font-weight:600;padding:.3rem 0;color:var(--muted)}
th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:var(--head)}
td{overflow-wrap:break-word}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0 0 1rem}
dt{font-weight:600;color:var(--muted)}
dd{margin:0}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.status{display:inline-block;white-space:nowrap;padding:0 .45rem;border-radius:.6rem;font-size:13px;font-weight:600;
  background:#e8eaed;color:#1b1f24}
.s-succeeded,.s-sent{background:#d7f2dd;color:#0c5a1f}
.s-failed{background:#fbdcdc;color:#8a1010}
.s-running,.s-queued{background:#dde9fb;color:#123f7a}
.s-suppressed{background:#eee;color:#3b3b3b}
.error{color:#8a1010}
.empty{color:var(--muted)}
.actions{display:flex;gap:.6rem;margin:.4rem 0}
button{font:inherit;padding:.35rem .9rem;border:1px solid var(--accent);border-radius:.3rem;
  background:var(--accent);color:#fff;cursor:pointer}
button+button{background:#fff;color:var(--accent)}
button:disabled{opacity:.6}
output{display:block;min-height:1.5rem;margin:.3rem 0 1rem;white-space:pre-wrap}
figure{margin:.5rem 0 1rem}
figure svg{max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:13px}
svg text{font:11px system-ui,sans-serif;fill:#4a5360}
"""

SCRIPT = """
(function(){
  var root = document.body.getAttribute('data-api-root') || '';
  var key = new URLSearchParams(location.search).get('code');
  function api(path){ return root + path + (key ? '?code=' + encodeURIComponent(key) : ''); }
  function describe(action, body){
    if (action === 'run') { return 'Queued run ' + body.run_id + '. Reload the page to follow it.'; }
    var lines = ['Preview: ' + body.rows.exported + ' rows would be exported (' + body.rows.added + ' added, '
                 + body.rows.updated + ' updated, ' + body.rows.removed + ' removed), '
                 + (body.full ? 'a full run' : 'a delta run') + ', nothing uploaded:'];
    body.files.forEach(function(f){ lines.push('  ' + f.path + ': ' + f.rows + ' rows, ' + f.bytes + ' bytes'); });
    (body.warnings || []).forEach(function(w){ lines.push('warning ' + w.code + ': ' + w.message); });
    if (body.error) { lines.push('error ' + body.error.code + ': ' + body.error.message); }
    return lines.join('\\n');
  }
  document.querySelectorAll('button[data-action]').forEach(function(button){
    button.addEventListener('click', function(){
      var out = document.getElementById('result');
      var action = button.getAttribute('data-action');
      var id = encodeURIComponent(button.getAttribute('data-activation'));
      out.textContent = action === 'run' ? 'Queueing a run…' : 'Previewing…';
      button.disabled = true;
      fetch(api('activations/' + id + '/' + action), {method: 'POST'})
        .then(function(r){ return r.json().then(function(body){ return [r.ok, body]; }); })
        .then(function(answer){
          out.textContent = answer[0] ? describe(action, answer[1]) : 'Error: ' + answer[1].error.message;
        })
        .catch(function(e){ out.textContent = 'Error: ' + e; })
        .then(function(){ button.disabled = false; });
    });
  });
})();
"""
