// The sheriff's page (src/sheriff/http/index.html): a view of the
// snapshots /api/events sends (src/sheriff/snapshot.rs), the output of one
// command from /api/output, and actions through POST /api/action and
// /api/run. Everything from the fleet is inserted as text (textContent,
// text nodes), never as HTML.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  let snap = null;
  const selected = new Set(); // "deputy\u0000id"
  let current = null; // [deputy, id] shown in the pane
  let outSource = null;
  const OUTPUT_MAX = 1 << 20; // characters kept in the pane

  const keyOf = (c) => c.deputy + '\u0000' + c.id;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function bytes(b) {
    if (!b || b <= 0) return '-';
    if (b >= 1 << 30) return (b / (1 << 30)).toFixed(1) + 'G';
    if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + 'M';
    return (b / 1024).toFixed(0) + 'K';
  }

  function secs(s) {
    if (s === null || s === undefined || s < 0) return '-';
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
    return Math.floor(s / 86400) + 'd' + String(Math.floor(s / 3600) % 24).padStart(2, '0') + 'h';
  }

  function statusClass(s) {
    if (s.startsWith('Stopped (Error')) return 'st-stopped-error';
    return 'st-' + s.split(' ')[0].toLowerCase();
  }

  function liveText(l) {
    return l === 'lost' ? 'not heard' : l === 'late' ? 'late' : '';
  }

  function options(select, values) {
    const keep = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const v of values) select.add(new Option(v === '' ? '(none)' : v, v));
    select.value = values.includes(keep) ? keep : '';
  }

  function shown(c) {
    const d = $('f-deputy').value, g = $('f-group').value, st = $('f-status').value;
    const n = $('f-name').value.trim().toLowerCase();
    return (!d || c.deputy === d) && (!g || c.group === g || c.group.startsWith(g + '/')) &&
      (!st || c.status === st) && (!n || c.id.toLowerCase().includes(n));
  }

  function result(text, isError) {
    const r = $('result');
    r.textContent = text;
    r.className = isError ? 'error' : '';
  }

  async function post(path, body) {
    try {
      const r = await fetch(path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Daemonproxy-Action': '1' },
        body: JSON.stringify(body),
        credentials: 'same-origin',
      });
      const v = await r.json().catch(() => ({ error: 'HTTP ' + r.status }));
      if (!r.ok || v.error) {
        result(path + ': ' + (v.error || ('HTTP ' + r.status)), true);
        return null;
      }
      return v;
    } catch (e) {
      result(path + ': ' + e, true);
      return null;
    }
  }

  async function act(verb, sel, what) {
    const v = await post('/api/action', Object.assign({ verb: verb }, sel));
    if (v) {
      let t = verb + ' ' + what + ': ' + v.changed + ' changed of ' + v.selected + ' selected';
      if (v.skipped) t += ', ' + v.skipped + ' left out (their deputy will not act on them)';
      result(t, false);
    }
  }

  function renderCounts() {
    const box = $('counts');
    box.replaceChildren();
    box.append(el('span', 'commands: ' + snap.commands.length));
    for (const [w, n] of Object.entries(snap.counts)) {
      if (n > 0) box.append(el('span', w + ': ' + n, statusClass(w)));
    }
  }

  function groupButtons(tr, group, rows) {
    const td = tr.lastChild;
    for (const verb of ['start', 'stop', 'restart']) {
      const b = el('button', verb + ' group');
      b.type = 'button';
      b.className = 'needs-write group-' + verb;
      b.addEventListener('click', (ev) => {
        ev.stopPropagation();
        const sel = group ? { group: group } : { commands: rows.map((c) => [c.deputy, c.id]) };
        act(verb, sel, 'group ' + (group || '(none)'));
      });
      td.append(' ', b);
    }
  }

  function renderCommands() {
    const body = $('commands').tBodies[0];
    const rows = snap.commands.filter(shown);
    rows.sort((a, b) => a.group.localeCompare(b.group) || a.deputy.localeCompare(b.deputy) || a.id.localeCompare(b.id));
    const frag = document.createDocumentFragment();
    let group = null;
    for (let i = 0; i < rows.length; i++) {
      const c = rows[i];
      if (c.group !== group) {
        group = c.group;
        const members = rows.filter((x) => x.group === group);
        const tr = el('tr', null, 'group-row');
        tr.dataset.group = group;
        const td = el('td', 'group ' + (group || '(none)') + ' (' + members.length + ')');
        td.colSpan = 10;
        tr.append(td);
        groupButtons(tr, group, members);
        frag.append(tr);
      }
      const tr = el('tr', null, 'cmd');
      tr.dataset.deputy = c.deputy;
      tr.dataset.id = c.id;
      if (current && current[0] === c.deputy && current[1] === c.id) tr.classList.add('current');
      const box = el('input');
      box.type = 'checkbox';
      box.checked = selected.has(keyOf(c));
      box.addEventListener('click', (ev) => ev.stopPropagation());
      box.addEventListener('change', () => { if (box.checked) selected.add(keyOf(c)); else selected.delete(keyOf(c)); });
      const first = el('td');
      first.append(box);
      const dep = el('td', c.deputy, 'c-deputy');
      if (c.live !== 'ok') dep.append(' ', el('span', liveText(c.live), 'not-heard'));
      const up = c.uptime === null ? '-' : (c.start_seen ? '' : '>') + secs(c.uptime);
      tr.append(first, dep, el('td', c.id, 'c-id'), el('td', c.status, 'c-status ' + statusClass(c.status)),
        el('td', c.pid > 0 ? c.pid : '-', 'c-pid'), el('td', c.pid > 0 ? c.cpu_pct.toFixed(1) : '-', 'c-cpu'),
        el('td', c.pid > 0 ? bytes(c.rss) : '-', 'c-rss'), el('td', up, 'c-uptime'),
        el('td', c.restarts, 'c-restarts'), el('td', c.exit_text, 'c-exit'));
      tr.addEventListener('click', () => openPane(c.deputy, c.id));
      frag.append(tr);
    }
    body.replaceChildren(frag);
  }

  function renderDeputies() {
    const body = $('deputy-table').tBodies[0];
    const frag = document.createDocumentFragment();
    for (const d of snap.deputies) {
      const tr = el('tr', null, d.live === 'lost' ? 'lost' : '');
      tr.dataset.deputy = d.deputy;
      const state = el('td', null, 'd-state');
      if (d.live === 'ok') state.textContent = 'ok';
      else state.append(el('span', liveText(d.live), 'not-heard'));
      const used = d.mem_total > 0 ? d.mem_total - d.mem_free : 0;
      tr.append(el('td', d.deputy, 'd-id'), state,
        el('td', d.heard_ago === null ? 'never' : d.heard_ago.toFixed(1) + ' s ago', 'd-heard'),
        el('td', d.cpu_load === null ? '-' : (d.cpu_load * 100).toFixed(0) + '%', 'd-load'),
        el('td', bytes(used), 'd-mem'), el('td', bytes(d.mem_total), 'd-total'),
        el('td', d.commands, 'd-commands'), el('td', d.running, 'd-running'));
      frag.append(tr);
    }
    body.replaceChildren(frag);
  }

  function renderScript() {
    const s = snap.script;
    const box = $('script');
    options($('script-name'), snap.sheriff.scripts);
    $('scripts').hidden = snap.sheriff.scripts.length === 0;
    if (!s) { box.hidden = true; return; }
    box.hidden = false;
    $('script-title').textContent = s.name;
    $('script-outcome').textContent = s.outcome;
    const ol = $('script-steps');
    if (ol.children.length !== s.steps.length) ol.replaceChildren(...s.steps.map((t) => el('li', t)));
  }

  function renderPane() {
    if (!current) return;
    const c = snap.commands.find((x) => x.deputy === current[0] && x.id === current[1]);
    const dl = $('settings');
    dl.replaceChildren();
    if (!c) { $('pane-state').textContent = 'no longer held by the sheriff'; return; }
    const items = [['status', c.status], ['exec', c.exec], ['group', c.group || '(none)'],
      ['auto respawn', c.auto_respawn ? 'yes' : 'no'], ['stop signal', c.stop_signal],
      ['stop time allowed', c.stop_time_allowed + ' s'], ['last exit', c.exit_text]];
    if (c.refused) items.push(['deputy says', c.refused]);
    for (const [k, v] of items) dl.append(el('dt', k), el('dd', v));
  }

  function render() {
    document.body.classList.toggle('read-only', snap.sheriff.read_only);
    $('sheriff').textContent = snap.sheriff.id + ' (' + snap.sheriff.mode + (snap.sheriff.read_only ? ', read-only' : '') + ') ' + snap.sheriff.url;
    const deputies = [...new Set(snap.commands.map((c) => c.deputy).concat(snap.deputies.map((d) => d.deputy)))].sort();
    options($('f-deputy'), deputies);
    options($('f-group'), [...new Set(snap.commands.map((c) => c.group))].sort());
    options($('f-status'), Object.keys(snap.counts));
    renderCounts();
    renderCommands();
    renderDeputies();
    renderScript();
    renderPane();
  }

  function openPane(deputy, id) {
    current = [deputy, id];
    $('pane').hidden = false;
    $('pane-title').textContent = deputy + ' / ' + id;
    const out = $('output');
    out.replaceChildren();
    if (outSource) outSource.close();
    $('pane-state').textContent = 'following output';
    const q = 'deputy=' + encodeURIComponent(deputy) + '&id=' + encodeURIComponent(id);
    outSource = new EventSource('/api/output?' + q);
    outSource.addEventListener('output', (ev) => {
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.append(document.createTextNode(JSON.parse(ev.data)));
      while (out.textContent.length > OUTPUT_MAX && out.firstChild) out.firstChild.remove();
      if (atEnd) out.scrollTop = out.scrollHeight;
    });
    outSource.onerror = () => {
      // No reconnect: the ring would come again, twice over.
      outSource.close();
      $('pane-state').textContent = 'output stream ended (click the row to follow again)';
    };
    if (snap) { renderPane(); renderCommands(); }
  }

  function closePane() {
    if (outSource) outSource.close();
    outSource = null;
    current = null;
    $('pane').hidden = true;
    if (snap) renderCommands();
  }

  function start() {
    const page = location.pathname === '/deputies' ? 'deputies' : 'fleet';
    $(page).hidden = false;
    $('tab-' + page).classList.add('current');
    for (const b of document.querySelectorAll('#actions button[data-verb], #pane-actions button[data-verb]')) {
      b.addEventListener('click', () => {
        const verb = b.dataset.verb;
        if (b.dataset.target === 'all') act(verb, { all: true }, 'all');
        else if (b.dataset.target === 'current' && current) act(verb, { commands: [current] }, current.join('/'));
        else if (b.dataset.target === 'selected') {
          const keys = [...selected].map((k) => k.split('\u0000'));
          if (keys.length === 0) result('select commands first (the boxes on the left)', true);
          else act(verb, { commands: keys }, keys.length + ' selected');
        }
      });
    }
    $('select-all').addEventListener('change', () => {
      if (!snap) return;
      for (const c of snap.commands.filter(shown)) {
        if ($('select-all').checked) selected.add(keyOf(c)); else selected.delete(keyOf(c));
      }
      renderCommands();
    });
    for (const id of ['f-deputy', 'f-group', 'f-status']) $(id).addEventListener('change', () => snap && renderCommands());
    $('f-name').addEventListener('input', () => snap && renderCommands());
    $('pane-close').addEventListener('click', closePane);
    $('run-script').addEventListener('click', async () => {
      const name = $('script-name').value;
      if (!name) { result('choose a script', true); return; }
      if (await post('/api/run', { script: name })) result('script ' + name + ' started', false);
    });
    const events = new EventSource('/api/events');
    events.addEventListener('snapshot', (ev) => {
      snap = JSON.parse(ev.data);
      $('conn').textContent = 'live';
      $('conn').className = 'conn-up';
      render();
    });
    events.onerror = () => {
      $('conn').textContent = 'reconnecting';
      $('conn').className = 'conn-down';
    };
  }

  document.addEventListener('DOMContentLoaded', start);
})();
