// Stratus web console: plain JavaScript, no framework and no build step. Everything the API
// returns comes from deployment files and plugins, which may be hostile, so data only ever
// reaches the page through textContent and attribute values, never as markup.
'use strict';

(() => {
  /** Where the token is kept: this tab's session storage only. */
  const TOKEN_KEY = 'stratus.operator-token';
  /** The safety-net poll of the deployments, beside the refresh on every event. */
  const POLL_MS = 5000;
  /** Events kept on the page; older rows are dropped. */
  const MAX_EVENTS = 500;
  /** Lines of a server's log asked for. */
  const LOG_TAIL = 200;
  /** Reconnect delays of the event stream. */
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 15000;
  /** No byte for this long (the server sends a keep-alive every 15 s) means a dead stream. */
  const STREAM_SILENCE_MS = 45000;
  /** A single SSE event larger than this is a broken stream. */
  const MAX_SSE_BUFFER = 4 * 1024 * 1024;
  /** Characters of a string shown inside a server box (the whole string is its tooltip). */
  const BOX_TEXT = 28;
  /** Deployment states a tier can be scaled in (the control plane refuses the others). */
  const SCALABLE = new Set(['RUNNING', 'SCALING', 'DEGRADED']);
  /** The fixed geometry of the graph, in pixels. */
  const G = { colW: 210, colGap: 110, boxH: 62, boxGap: 10, pad: 16, maxSlots: 10 };

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  const ui = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    deployments: [],
    selected: decodeHash(),
    server: null,
    log: 'hooks',
    scaling: new Set(),
    lastEventId: null,
    lastEventNumber: -1,
    streamAbort: null,
    started: false,
    refreshing: false,
    refreshAgain: false,
    refreshTimer: null,
    logTimer: null,
    serverNodes: new Map(),
    tierHeads: new Map(),
    tabs: new Map(),
  };

  // ---- small DOM helpers: text only ----

  /** An HTML element with `attrs` (set as attributes) and text or element children. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  /** An SVG element with `attrs`. */
  function s(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
    }
  }

  function cut(text, n) {
    const t = String(text ?? '');
    return t.length > n ? t.slice(0, n - 1) + '…' : t;
  }

  function clock(ms) {
    if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
    return new Date(ms).toISOString().slice(11, 19);
  }

  function enc(part) {
    return encodeURIComponent(String(part));
  }

  function decodeHash() {
    try {
      return location.hash.length > 1 ? decodeURIComponent(location.hash.slice(1)) : null;
    } catch {
      return null;
    }
  }

  function notice(text, isError) {
    const n = $('notice');
    n.textContent = text;
    n.title = text;
    n.classList.toggle('error', Boolean(isError));
  }

  // ---- states and colours ----

  /** The word a server box shows: its agent's state, else its worst service state. */
  function serverWord(srv) {
    if (srv.agent !== 'RUNNING') return srv.agent || 'UNKNOWN';
    const states = (srv.services || []).map((x) => x.state);
    for (const w of ['FAILED', 'UNKNOWN', 'STARTING', 'PAUSED', 'STOPPED']) {
      if (states.includes(w)) return w;
    }
    return srv.replacing ? 'REPLACING' : 'RUNNING';
  }

  /** The worst health status of a server's services, or '' before any check. */
  function serverHealth(srv) {
    const order = ['CRITICAL', 'UNKNOWN', 'WARNING', 'OK'];
    const seen = (srv.services || []).map((x) => x.health && x.health.status).filter(Boolean);
    return order.find((w) => seen.includes(w)) || '';
  }

  function crashLooping(srv) {
    return (srv.services || []).some((x) => (x.processes || []).some((p) => p.crash_loop));
  }

  /** The colour class of a server. */
  function serverClass(srv) {
    const word = serverWord(srv);
    const health = serverHealth(srv);
    if (['FAILED', 'LOST', 'UNKNOWN', 'REPLACING'].includes(word)) return 'st-bad';
    if (health === 'CRITICAL' || crashLooping(srv)) return 'st-bad';
    if (['TERMINATED', 'STOPPED'].includes(word)) return 'st-idle';
    if (word !== 'RUNNING') return 'st-pending';
    if (health === 'WARNING' || health === 'UNKNOWN') return 'st-warn';
    return 'st-ok';
  }

  function stateClass(word) {
    switch (word) {
      case 'RUNNING': case 'OK': case 'DONE': return 'st-ok';
      case 'FAILED': case 'CRITICAL': case 'LOST': case 'CRASH-LOOP': return 'st-bad';
      case 'DEGRADED': case 'WARNING': case 'UNKNOWN': case 'RESTARTING': return 'st-warn';
      case 'TERMINATED': case 'STOPPED': case 'PAUSED': return 'st-idle';
      default: return 'st-pending';
    }
  }

  // ---- the API ----

  class AuthError extends Error {}

  /** A fetch of the API with the token; a 401 forgets the token, other failures throw their problem. */
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    headers.set('Authorization', 'Bearer ' + ui.token);
    const res = await fetch(path, { ...options, headers, cache: 'no-store' });
    if (res.status === 401) {
      forgetToken('The token was refused: enter it again.');
      throw new AuthError('unauthorized');
    }
    if (!res.ok) throw new Error(await problemText(res));
    return res;
  }

  /** What a failed response says: its problem+json detail (and file errors), else its text. */
  async function problemText(res) {
    const text = await res.text().catch(() => '');
    try {
      const p = JSON.parse(text);
      const errs = Array.isArray(p.errors)
        ? p.errors.map((e) => `${e.file ?? ''}:${e.line ?? ''}:${e.column ?? ''}: ${e.message ?? ''}`)
        : [];
      return [p.detail || p.title || `HTTP ${res.status}`, ...errs].join('; ');
    } catch {
      return cut(text.trim() || `HTTP ${res.status}`, 300);
    }
  }

  // ---- token ----

  function askToken(message) {
    $('token-error').textContent = message || '';
    $('token-input').value = '';
    const d = $('token-dialog');
    if (!d.open) d.showModal();
    $('token-input').focus();
  }

  async function submitToken(ev) {
    ev.preventDefault();
    const candidate = $('token-input').value.trim();
    if (!candidate) return;
    $('token-submit').disabled = true;
    try {
      const res = await fetch('/v1/deployments', {
        headers: { Authorization: 'Bearer ' + candidate },
        cache: 'no-store',
      });
      if (res.status === 401) {
        $('token-error').textContent = 'This token was refused.';
        return;
      }
      if (!res.ok) {
        $('token-error').textContent = await problemText(res);
        return;
      }
      ui.token = candidate;
      sessionStorage.setItem(TOKEN_KEY, candidate);
      $('token-dialog').close();
      start();
    } catch (e) {
      $('token-error').textContent = 'The control plane cannot be reached: ' + e.message;
    } finally {
      $('token-submit').disabled = false;
    }
  }

  function forgetToken(message) {
    ui.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    if (ui.streamAbort) ui.streamAbort.abort();
    ui.started = false;
    // What the token showed goes with it.
    ui.deployments = [];
    ui.server = null;
    ui.lastEventId = null;
    ui.lastEventNumber = -1;
    $('event-list').replaceChildren();
    render();
    setLive('offline');
    askToken(message);
  }

  // ---- refresh ----

  /** Reads every deployment and renders; calls while one runs fold into one more read. */
  async function refresh() {
    if (!ui.token) return;
    if (ui.refreshing) {
      ui.refreshAgain = true;
      return;
    }
    ui.refreshing = true;
    try {
      do {
        ui.refreshAgain = false;
        const res = await api('/v1/deployments');
        const body = await res.json();
        ui.deployments = Array.isArray(body.deployments) ? body.deployments : [];
        $('updated').textContent = 'updated ' + clock(Date.now()) + ' UTC';
        render();
      } while (ui.refreshAgain);
    } catch (e) {
      if (!(e instanceof AuthError)) notice('Reading the deployments failed: ' + e.message, true);
    } finally {
      ui.refreshing = false;
    }
  }

  function scheduleRefresh() {
    if (ui.refreshTimer) return;
    ui.refreshTimer = setTimeout(() => {
      ui.refreshTimer = null;
      refresh();
    }, 150);
  }

  function start() {
    if (ui.started) return;
    ui.started = true;
    refresh();
    streamEvents();
  }

  // ---- rendering ----

  function current() {
    const deps = ui.deployments;
    let d = deps.find((x) => x.name === ui.selected);
    if (!d) {
      d = deps.find((x) => x.state !== 'TERMINATED') || deps[0] || null;
      ui.selected = d ? d.name : null;
    }
    return d;
  }

  function render() {
    const dep = current();
    renderTabs(dep);
    renderHead(dep);
    renderGraph(dep);
    renderDetails(dep);
  }

  /** One tab per deployment, keyed by name and updated in place so focus survives. */
  function renderTabs(dep) {
    const nav = $('deployments');
    const keep = new Set();
    ui.deployments.forEach((d, i) => {
      keep.add(d.name);
      let tab = ui.tabs.get(d.name);
      if (!tab) {
        const pill = h('span', { class: 'pill' });
        const b = h('button', { type: 'button', class: 'tab', role: 'tab', 'data-deployment': d.name, title: d.name },
          cut(d.name, 32), pill);
        b.addEventListener('click', () => select(d.name));
        tab = { b, pill };
        ui.tabs.set(d.name, tab);
      }
      // Moved only when out of the API's order: moving a focused node would blur it.
      if (nav.children[i] !== tab.b) nav.insertBefore(tab.b, nav.children[i] || null);
      tab.b.setAttribute('aria-selected', d === dep ? 'true' : 'false');
      tab.pill.className = 'pill ' + stateClass(d.state);
      tab.pill.textContent = d.state;
    });
    for (const [name, tab] of ui.tabs) {
      if (!keep.has(name)) {
        tab.b.remove();
        ui.tabs.delete(name);
      }
    }
  }

  function select(name) {
    ui.selected = name;
    ui.server = null;
    history.replaceState(null, '', '#' + enc(name));
    render();
    renderEventFilter();
  }

  function renderHead(dep) {
    $('dep-name').textContent = dep ? dep.name : 'No deployment';
    $('dep-name').title = dep ? dep.name : '';
    const st = $('dep-state');
    st.textContent = dep ? dep.state : '—';
    st.className = 'pill ' + (dep ? stateClass(dep.state) : 'st-idle');
    setLine('dep-description', dep && dep.description);
    setLine('dep-reason', dep && dep.reason);
    setLine('dep-endpoints', dep && dep.endpoints && dep.endpoints.length ? 'endpoints: ' + dep.endpoints.join('  ') : '');
    $('terminate').disabled = !dep || ['TERMINATED', 'STOPPING'].includes(dep.state);
    $('graph-empty').hidden = Boolean(dep);
    $('graph-empty').textContent = ui.token
      ? 'No deployment yet: launch one with `stratus launch FILE`.'
      : 'Enter the operator token to see the deployments.';
  }

  function setLine(id, text) {
    const p = $(id);
    p.textContent = text || '';
    p.title = text || '';
  }

  /** Tiers left to right in dependency order: balancers first, what nothing needs last. */
  function orderTiers(tiers) {
    const names = tiers.map((t) => t.name);
    const edges = new Map(tiers.map((t) => [t.name, outgoing(t).filter((n) => names.includes(n))]));
    const rank = new Map(names.map((n) => [n, 0]));
    // Longest path from a source; bounded by the tier count, so a cycle cannot loop forever.
    for (let round = 0; round < names.length; round++) {
      for (const [from, tos] of edges) {
        for (const to of tos) rank.set(to, Math.max(rank.get(to), rank.get(from) + 1));
      }
    }
    return [...tiers].sort((a, b) => rank.get(a.name) - rank.get(b.name) || a.name.localeCompare(b.name));
  }

  function outgoing(tier) {
    const out = [...(tier.depends_on || [])];
    if (tier.balances && !out.includes(tier.balances)) out.push(tier.balances);
    return out;
  }

  /** Column and slot positions of a deployment's graph. */
  function layout(dep) {
    const tiers = orderTiers(dep.tiers || []);
    const cols = tiers.map((tier, i) => {
      const max = tier.target ? tier.target.max : tier.servers.length;
      const slots = Math.max(1, Math.min(G.maxSlots, Math.max(tier.servers.length, max)));
      return { tier, x: G.pad + i * (G.colW + G.colGap), slots };
    });
    const rows = Math.max(1, ...cols.map((c) => c.slots));
    return {
      cols,
      width: Math.max(G.pad * 2 + cols.length * G.colW + Math.max(0, cols.length - 1) * G.colGap, 320),
      height: G.pad * 2 + rows * (G.boxH + G.boxGap) - G.boxGap + 8,
    };
  }

  function slotY(i) {
    return G.pad + i * (G.boxH + G.boxGap);
  }

  function renderGraph(dep) {
    const svgEl = $('graph-svg');
    const columns = $('layer-columns');
    const arrows = $('layer-arrows');
    if (!dep) {
      columns.replaceChildren();
      arrows.replaceChildren();
      syncServers([], dep);
      syncHeads([], dep);
      svgEl.setAttribute('width', '0');
      svgEl.setAttribute('height', '0');
      return;
    }
    const lay = layout(dep);
    svgEl.setAttribute('width', lay.width);
    svgEl.setAttribute('height', lay.height);
    $('tier-heads').style.width = lay.width + 'px';
    const clip = $('box-clip-rect');
    clip.setAttribute('width', G.colW);
    clip.setAttribute('height', G.boxH);

    const places = new Map();
    const boxes = [];
    const bg = [];
    for (const col of lay.cols) {
      bg.push(s('rect', {
        class: 'column-bg', x: col.x, y: 0, width: G.colW, height: lay.height, rx: 0,
      }));
      const shown = col.tier.servers.length > col.slots
        ? col.tier.servers.slice(0, col.slots - 1)
        : col.tier.servers;
      shown.forEach((srv, i) => {
        const place = { x: col.x, y: slotY(i) };
        places.set(srv.id, place);
        boxes.push({ srv, place, tier: col.tier.name });
      });
      if (shown.length < col.tier.servers.length) {
        bg.push(moreBox(col.x, slotY(col.slots - 1), col.tier.servers.length - shown.length));
      }
      const count = col.tier.target ? col.tier.target.count : shown.length;
      for (let i = shown.length; i < col.slots; i++) {
        const wanted = i < count && shown.length === col.tier.servers.length;
        bg.push(s('rect', {
          class: wanted ? 'slot-wanted' : 'slot-room',
          x: col.x + 1, y: slotY(i), width: G.colW - 2, height: G.boxH, rx: 6,
        }));
        if (wanted) {
          bg.push(s('text', { class: 'slot-label', x: col.x + 12, y: slotY(i) + G.boxH / 2 + 4 }, 'wanted: starting soon'));
        }
      }
    }
    columns.replaceChildren(...bg);
    arrows.replaceChildren(...drawArrows(lay, places));
    syncServers(boxes, dep);
    syncHeads(lay.cols, dep);
  }

  function moreBox(x, y, n) {
    const g = s('g', { class: 'more', transform: `translate(${x},${y})` });
    g.append(
      s('rect', { class: 'box', width: G.colW, height: G.boxH, rx: 6 }),
      s('text', { x: 12, y: G.boxH / 2 + 4 }, `+${n} more servers (see stratus status)`),
    );
    return g;
  }

  /** Tier arrows for depends-on, server arrows for load balancing. */
  function drawArrows(lay, places) {
    const out = [];
    const colOf = new Map(lay.cols.map((c) => [c.tier.name, c]));
    const rowY = slotY(0) + G.boxH / 2;
    for (const col of lay.cols) {
      for (const to of col.tier.depends_on || []) {
        const target = colOf.get(to);
        if (!target || target === col) continue;
        out.push(tierArrow(col, target, rowY, lay.height));
      }
      const balanced = col.tier.balances && colOf.get(col.tier.balances);
      if (!balanced) continue;
      let labelled = false;
      for (const lb of col.tier.servers) {
        const a = places.get(lb.id);
        if (!a) continue;
        for (const node of balanced.tier.servers) {
          const b = places.get(node.id);
          if (!b || b.x <= a.x) continue;
          const from = { x: a.x + G.colW, y: a.y + G.boxH / 2 };
          const into = { x: b.x, y: b.y + G.boxH / 2 };
          out.push(curve(from, into, 'arrow-lb', 'url(#arrow-lb)'));
          if (!labelled) {
            out.push(s('text', { class: 'arrow-label', x: from.x + 8, y: from.y - 8 }, 'balances'));
            labelled = true;
          }
        }
      }
    }
    return out;
  }

  /** `col` depends on `target`: an arrow between the columns at the first row, labelled. */
  function tierArrow(col, target, y, height) {
    const g = s('g');
    if (target.x > col.x) {
      const from = { x: col.x + G.colW, y };
      const into = { x: target.x, y };
      g.append(
        curve(from, into, 'arrow-dep', 'url(#arrow-dep)'),
        s('text', { class: 'arrow-label', x: (from.x + into.x) / 2, y: y - 8, 'text-anchor': 'middle' }, 'depends on'),
      );
    } else {
      // Only a cycle puts a dependency to the left: loop it under the columns.
      const low = height - 2;
      const d = `M${col.x + G.colW / 2},${height - 10} C${col.x + G.colW / 2},${low} ${target.x + G.colW / 2},${low} ${target.x + G.colW / 2},${height - 10}`;
      g.append(s('path', { class: 'arrow-dep', d, 'marker-end': 'url(#arrow-dep)' }));
    }
    return g;
  }

  /** A horizontal cubic curve from `a` to `b`, ending at `b`'s edge. */
  function curve(a, b, cls, marker) {
    const dx = Math.max(30, (b.x - a.x) / 2);
    const d = `M${a.x},${a.y} C${a.x + dx},${a.y} ${b.x - dx},${b.y} ${b.x - 2},${b.y}`;
    return s('path', { class: cls, d, 'marker-end': marker });
  }

  /** Server boxes, keyed by server id and updated in place so focus and hover survive. */
  function syncServers(boxes, dep) {
    const layer = $('layer-servers');
    const keep = new Set();
    for (const { srv, place, tier } of boxes) {
      const key = (dep ? dep.name : '') + '\u0000' + srv.id;
      keep.add(key);
      let node = ui.serverNodes.get(key);
      if (!node) {
        node = serverNode(srv.id);
        ui.serverNodes.set(key, node);
        layer.append(node.g);
      }
      updateServerNode(node, srv, tier, place);
    }
    for (const [key, node] of ui.serverNodes) {
      if (!keep.has(key)) {
        node.g.remove();
        ui.serverNodes.delete(key);
      }
    }
  }

  function serverNode(id) {
    const g = s('g', { class: 'server', tabindex: 0, role: 'button', 'data-server': id });
    const inner = s('g', { 'clip-path': 'url(#box-clip)' });
    const parts = {
      box: s('rect', { class: 'box', x: 0.5, y: 0.5, width: G.colW - 1, height: G.boxH - 1, rx: 6 }),
      bar: s('rect', { class: 'bar', x: 0, y: 0, width: 5, height: G.boxH, rx: 2 }),
      id: s('text', { class: 'sid', x: 14, y: 19 }),
      word: s('text', { class: 'sstate', x: G.colW - 10, y: 19, 'text-anchor': 'end' }),
      addr: s('text', { class: 'ssub', x: 14, y: 36 }),
      svc: s('text', { class: 'ssub', x: 14, y: 53 }),
      title: s('title'),
    };
    inner.append(parts.box, parts.bar, parts.id, parts.word, parts.addr, parts.svc);
    g.append(parts.title, inner);
    g.addEventListener('click', () => selectServer(id));
    g.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        selectServer(id);
      }
    });
    return { g, ...parts };
  }

  function updateServerNode(node, srv, tier, place) {
    const word = serverWord(srv);
    const health = serverHealth(srv);
    node.g.setAttribute('transform', `translate(${place.x},${place.y})`);
    node.g.setAttribute('class', `server ${serverClass(srv)}${ui.server === srv.id ? ' selected' : ''}`);
    node.g.setAttribute('data-tier', tier);
    node.g.setAttribute('data-state', word);
    node.g.setAttribute('data-health', health);
    node.g.setAttribute('aria-label', `server ${srv.id}: ${word}`);
    node.id.textContent = cut(srv.id, 20);
    node.word.textContent = word;
    const metrics = typeof srv.cpu_percent === 'number' ? `  cpu ${srv.cpu_percent.toFixed(0)}%` : '';
    node.addr.textContent = cut((srv.address || '') + metrics, BOX_TEXT + 4);
    const svcs = (srv.services || []).map((x) => `${x.name} ${x.health ? x.health.status : x.state}`);
    node.svc.textContent = cut(svcs.join(' · ') || 'no services yet', BOX_TEXT + 4);
    node.title.textContent = [srv.id, srv.address, word, health && 'health ' + health, ...svcs].filter(Boolean).join('\n');
  }

  /** Tier headers (name, target, − and + buttons), keyed by tier and updated in place. */
  function syncHeads(cols, dep) {
    const wrap = $('tier-heads');
    const keep = new Set();
    for (const col of cols) {
      const key = (dep ? dep.name : '') + '\u0000' + col.tier.name;
      keep.add(key);
      let head = ui.tierHeads.get(key);
      if (!head) {
        head = tierHead(dep.name, col.tier.name);
        ui.tierHeads.set(key, head);
        wrap.append(head.div);
      }
      updateHead(head, dep, col);
    }
    for (const [key, head] of ui.tierHeads) {
      if (!keep.has(key)) {
        head.div.remove();
        ui.tierHeads.delete(key);
      }
    }
  }

  function tierHead(depName, tierName) {
    const name = h('span', { class: 'tier-name' });
    const target = h('span', { class: 'tier-target' });
    const minus = h('button', { type: 'button', class: 'scale-down', 'data-tier': tierName, title: 'One server less' }, '−');
    const plus = h('button', { type: 'button', class: 'scale-up', 'data-tier': tierName, title: 'One server more' }, '+');
    minus.addEventListener('click', () => scale(depName, tierName, -1));
    plus.addEventListener('click', () => scale(depName, tierName, +1));
    const div = h('div', { class: 'tier-head', 'data-tier': tierName },
      name, h('div', { class: 'tier-buttons' }, minus, plus), target);
    return { div, name, target, minus, plus };
  }

  function updateHead(head, dep, col) {
    const t = col.tier.target;
    head.div.style.left = col.x + 'px';
    head.div.style.width = G.colW + 'px';
    head.name.textContent = col.tier.name;
    head.name.title = col.tier.name;
    head.target.textContent = t
      ? `target ${t.count} · ${t.min}..${t.max} · ${col.tier.servers.length} now`
      : `${col.tier.servers.length} servers · no target`;
    const busy = ui.scaling.has(dep.name + '\u0000' + col.tier.name);
    const can = Boolean(t) && SCALABLE.has(dep.state) && !busy;
    head.minus.disabled = !can || t.count <= t.min;
    head.plus.disabled = !can || t.count >= t.max;
    head.minus.setAttribute('aria-label', `scale tier ${col.tier.name} down by one`);
    head.plus.setAttribute('aria-label', `scale tier ${col.tier.name} up by one`);
  }

  // ---- actions ----

  async function scale(depName, tierName, delta) {
    const dep = ui.deployments.find((d) => d.name === depName);
    const tier = dep && (dep.tiers || []).find((t) => t.name === tierName);
    if (!tier || !tier.target) return;
    const count = tier.target.count + delta;
    const key = depName + '\u0000' + tierName;
    ui.scaling.add(key);
    render();
    try {
      await api(`/v1/deployments/${enc(depName)}/tiers/${enc(tierName)}/scale`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ count }),
      });
      notice(`Scale accepted: tier ${tierName} of ${depName} to ${count} servers.`);
    } catch (e) {
      if (!(e instanceof AuthError)) notice(`Scaling tier ${tierName} failed: ${e.message}`, true);
    } finally {
      ui.scaling.delete(key);
      refresh();
    }
  }

  function askTerminate() {
    const dep = current();
    if (!dep) return;
    $('terminate-name').textContent = dep.name;
    $('terminate-keep-disks').checked = false;
    $('terminate-dialog').dataset.deployment = dep.name;
    $('terminate-dialog').showModal();
    $('terminate-cancel').focus();
  }

  async function confirmTerminate(ev) {
    ev.preventDefault();
    const d = $('terminate-dialog');
    const name = d.dataset.deployment;
    const keep = $('terminate-keep-disks').checked;
    d.close();
    try {
      await api(`/v1/deployments/${enc(name)}${keep ? '?keep_disks=true' : ''}`, { method: 'DELETE' });
      notice(`Terminate accepted for ${name}.`);
    } catch (e) {
      if (!(e instanceof AuthError)) notice(`Terminating ${name} failed: ${e.message}`, true);
    }
    refresh();
  }

  // ---- server details ----

  function selectServer(id) {
    ui.server = id;
    render();
    loadLog();
  }

  function selectedServer(dep) {
    if (!dep || !ui.server) return null;
    for (const t of dep.tiers || []) {
      const srv = t.servers.find((x) => x.id === ui.server);
      if (srv) return { srv, tier: t.name };
    }
    return null;
  }

  function renderDetails(dep) {
    const found = selectedServer(dep);
    $('details-empty').hidden = Boolean(found);
    $('details-body').hidden = !found;
    if (!found) return;
    const { srv, tier } = found;
    $('srv-title').textContent = srv.id;
    const word = serverWord(srv);
    const facts = [
      ['state', h('span', { class: 'pill ' + stateClass(word) }, word)],
      ['tier', tier],
      ['name', srv.name],
      ['address', srv.address],
      ['agent', srv.agent + (srv.pid ? ` (pid ${srv.pid})` : '')],
      ['cpu', typeof srv.cpu_percent === 'number' ? `${srv.cpu_percent.toFixed(1)} % of one CPU` : 'not measured yet'],
      ['memory', typeof srv.memory_bytes === 'number'
        ? `${(srv.memory_bytes / 1048576).toFixed(1)} MiB (${(srv.memory_percent ?? 0).toFixed(1)} %)`
        : 'not measured yet'],
      ['sampled', srv.sampled_at_ms ? clock(srv.sampled_at_ms) + ' UTC' : '—'],
    ];
    if (srv.replacing) facts.push(['replacing', srv.replacing]);
    for (const w of srv.waiting || []) facts.push(['waiting', `${w.hook} ${w.state} attempt ${w.next_attempt}/${w.attempts} at ${w.next_attempt_at}: ${w.message}`]);
    for (const c of srv.cm || []) facts.push(['cm ' + c.unit, `${c.state} ${c.summary}`]);
    $('srv-facts').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
    $('srv-services').replaceChildren(...(srv.services || []).map(serviceCard));
    if (!(srv.services || []).length) $('srv-services').replaceChildren(h('p', { class: 'muted' }, 'No services yet.'));
  }

  function serviceCard(svc) {
    const health = svc.health;
    const card = h('div', { class: 'service', 'data-service': svc.name },
      h('div', { class: 'service-head' },
        h('span', { class: 'service-name', title: svc.name }, svc.name),
        h('span', { class: 'pill ' + stateClass(svc.state) }, svc.state)));
    if (svc.reason) card.append(h('p', { class: 'reason' }, svc.reason));
    if (health) {
      card.append(
        h('p', null, h('span', { class: 'pill ' + stateClass(health.status) }, health.status), ' ', health.message),
        h('p', { class: 'muted' }, `checked ${health.checked_at} UTC · ${health.critical_in_a_row} critical in a row · ${health.restarts} restarts`),
      );
    } else {
      card.append(h('p', { class: 'muted' }, 'no health check yet'));
    }
    for (const p of svc.processes || []) {
      card.append(
        h('p', null, h('span', { class: 'pill ' + stateClass(p.state) }, p.state), ` ${p.name}: ${p.restarts} restarts, last ${p.last_exit} at ${p.last_exit_at}`),
        p.output_tail ? h('pre', null, p.output_tail) : null,
      );
    }
    return card;
  }

  function setLogKind(kind) {
    ui.log = kind;
    $('log-hooks').setAttribute('aria-pressed', String(kind === 'hooks'));
    $('log-agent').setAttribute('aria-pressed', String(kind === 'agent'));
    loadLog();
  }

  async function loadLog() {
    const dep = current();
    const server = ui.server;
    if (!dep || !server) return;
    const kind = ui.log;
    const pre = $('srv-log');
    try {
      const res = await api(`/v1/deployments/${enc(dep.name)}/servers/${enc(server)}/logs?log=${kind}&tail=${LOG_TAIL}`);
      const text = await res.text();
      if (ui.server !== server || ui.log !== kind) return;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = text || `(the ${kind} log is empty)`;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    } catch (e) {
      if (!(e instanceof AuthError) && ui.server === server) pre.textContent = `The ${kind} log could not be read: ${e.message}`;
    }
  }

  function scheduleLog() {
    if (ui.logTimer) return;
    ui.logTimer = setTimeout(() => {
      ui.logTimer = null;
      loadLog();
    }, 1000);
  }

  // ---- events (SSE over fetch, since EventSource cannot send the token) ----

  function setLive(word) {
    const live = $('live');
    live.textContent = word;
    live.className = 'pill ' + (word === 'live' ? 'st-ok' : word === 'offline' ? 'st-idle' : 'st-pending');
  }

  async function streamEvents() {
    let delay = RETRY_MIN_MS;
    while (ui.token && ui.started) {
      const ctrl = new AbortController();
      ui.streamAbort = ctrl;
      let watchdog = null;
      try {
        const headers = { Authorization: 'Bearer ' + ui.token, Accept: 'text/event-stream' };
        if (ui.lastEventId !== null) headers['Last-Event-ID'] = ui.lastEventId;
        const res = await fetch('/v1/events', { headers, signal: ctrl.signal, cache: 'no-store' });
        if (res.status === 401) {
          forgetToken('The token was refused: enter it again.');
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        setLive('live');
        delay = RETRY_MIN_MS;
        let heard = Date.now();
        watchdog = setInterval(() => {
          if (Date.now() - heard > STREAM_SILENCE_MS) ctrl.abort();
        }, 5000);
        await readSse(res.body, () => { heard = Date.now(); }, onEvent);
      } catch (e) {
        if (!ui.started) return;
      } finally {
        if (watchdog) clearInterval(watchdog);
      }
      if (!ui.token || !ui.started) return;
      setLive('reconnecting');
      scheduleRefresh();
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  /** Parses a text/event-stream body, calling `onEvent(id, type, data)` per dispatched event. */
  async function readSse(body, onBytes, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let id = null;
    let type = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onBytes();
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) onEvent(id, type || 'message', data.join('\n'));
          type = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') type = val;
        else if (field === 'id' && !val.includes('\0')) id = val;
      }
      if (buf.length > MAX_SSE_BUFFER) throw new Error('an event stream line is too long');
    }
  }

  function onEvent(id, type, data) {
    const n = Number(id);
    if (id !== null && Number.isFinite(n) && n <= ui.lastEventNumber) return;
    if (id !== null) {
      ui.lastEventId = id;
      if (Number.isFinite(n)) ui.lastEventNumber = n;
    }
    if (type !== 'event' && type !== 'message') return;
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    if (!ev || typeof ev !== 'object') return;
    appendEvent(ev);
    scheduleRefresh();
    if (ui.server && ev.server === ui.server) scheduleLog();
  }

  function appendEvent(ev) {
    const list = $('event-list');
    const follow = $('events-follow').checked;
    const level = String(ev.level || 'info').toLowerCase();
    const at = ev.at_ms ?? ev.time;
    const where = [ev.deployment, ev.server, ev.service].filter(Boolean).join(' / ');
    const row = h('div', {
      class: `event lv-${level.replace(/[^a-z]/g, '')}`,
      'data-deployment': ev.deployment || '',
      'data-id': ev.id ?? ev.seq ?? '',
    },
    h('span', { class: 'time' }, clock(at)),
    h('span', { class: 'level' }, level.toUpperCase()),
    h('span', { class: 'component', title: ev.component || '' }, ev.component || ''),
    h('span', { class: 'where', title: where }, where),
    h('span', { class: 'msg' }, ev.message ?? ''));
    row.hidden = filteredOut(row);
    list.append(row);
    while (list.childElementCount > MAX_EVENTS) list.firstElementChild.remove();
    if (follow) list.scrollTop = list.scrollHeight;
  }

  function filteredOut(row) {
    return $('events-only-selected').checked && row.dataset.deployment !== (ui.selected || '');
  }

  function renderEventFilter() {
    for (const row of $('event-list').children) row.hidden = filteredOut(row);
    if ($('events-follow').checked) $('event-list').scrollTop = $('event-list').scrollHeight;
  }

  // ---- wiring ----

  function wire() {
    $('token-form').addEventListener('submit', submitToken);
    $('token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());
    $('forget-token').addEventListener('click', () => forgetToken('Signed out: the token was forgotten in this tab.'));
    $('terminate').addEventListener('click', askTerminate);
    $('terminate-form').addEventListener('submit', confirmTerminate);
    $('terminate-cancel').addEventListener('click', () => $('terminate-dialog').close());
    $('log-hooks').addEventListener('click', () => setLogKind('hooks'));
    $('log-agent').addEventListener('click', () => setLogKind('agent'));
    $('log-reload').addEventListener('click', loadLog);
    $('events-only-selected').addEventListener('change', renderEventFilter);
    window.addEventListener('hashchange', () => {
      const name = decodeHash();
      if (name && name !== ui.selected) select(name);
    });
    setInterval(refresh, POLL_MS);
  }

  wire();
  if (ui.token) start();
  else askToken('');
})();
