// multiplan's map: decode the embedded data and draw it with Leaflet.
// Layer panel by section (collapsible), a legend that follows what is shown, a search
// over every feature id and patch number (case-insensitive), a north arrow and a
// measuring tool. Every attribute is written with textContent: nothing reaches innerHTML.
function multiplanDraw(map, D) {
  var L_ = D.labels, Q = D.quantum, MU = D.mu_per_m2;
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  function row(t, k, v) { var tr = el('tr'); tr.appendChild(el('td', k)); tr.appendChild(el('td', v)); t.appendChild(tr); }
  function ring(r) { var out = [], x = 0, y = 0; for (var i = 0; i < r.length; i += 2) { x += r[i]; y += r[i + 1]; out.push([y / Q, x / Q]); } return out; }
  function latlngs(g) { return g.map(function (poly) { return poly.map(ring); }); }
  function clsName(c) { if (c === null || c === undefined) return ''; var k = D.classes[c]; return k && k[0] !== c ? c + ' ' + k[0] : c; }
  function clsColour(c) { var k = c && D.classes[c]; return k ? k[1] : '#cccccc'; }
  function fmt(x, d) { return Number(x).toLocaleString(undefined, {minimumFractionDigits: d, maximumFractionDigits: d}); }
  function areaText(m2) { return fmt(m2, 2) + ' ' + L_['m2'] + ' = ' + fmt(m2 * MU, 3) + ' ' + L_['mu']; }
  function swatch(fill, stroke, dashed) { var s = el('span', null, 'sw'); s.style.background = fill || 'transparent'; if (stroke) s.style.borderColor = stroke; if (dashed) s.style.borderStyle = 'dashed'; return s; }

  // ---------------------------------------------------------------- styles and popups
  function styleOf(group, p) {
    var k = group.kind, s;
    if (k === 'plan') return {color: '#777', weight: 0.4, fillColor: clsColour(p[1]), fillOpacity: 0.65};
    if (k === 'faces') return {color: '#888', weight: 0.2, fillColor: clsColour(p[0]), fillOpacity: 0.7};
    if (k === 'conflicts') { var c = D.severity[(D.rules[p[0]] || {severity: 'low'}).severity]; return {color: c, weight: 1.2, fillColor: c, fillOpacity: 0.55}; }
    if (k === 'patches') { var d = D.diff[p[1]] || '#e7298a'; return {color: d, weight: 1.5, fillColor: d, fillOpacity: 0.45}; }
    if (k === 'boundary') return {color: '#222', weight: 2.5, fill: false};
    if (k === 'units') { s = group.style || {}; return {color: '#555', weight: s.weight || 1, dashArray: s.dashArray === undefined ? '2 4' : s.dashArray, fill: false}; }
    if (k === 'yield') return {color: '#444', weight: 0.6, fillColor: D.grades[p[1]] || '#bbbbbb', fillOpacity: 0.8};
    if (k === 'site') return {color: '#0050ff', weight: 4, fill: true, fillOpacity: 0.05};
    if (k === 'changes') { var cc = D.changes[p[4]] || '#999'; return {color: cc, weight: 0.6, fillColor: cc, fillOpacity: p[4] === 'same' ? 0.35 : 0.7}; }
    if (k === 'grid') return p[3] === null ? {color: '#888', weight: 0.5, fill: false} : {color: '#888', weight: 0.5, fillColor: D.choropleth[p[3]], fillOpacity: 0.7};
    s = group.style || {};
    return {color: s.color || '#444', weight: group.features.length > 100 ? 0.7 : 1.5, dashArray: s.dashArray, fillColor: s.fillColor || s.color, fillOpacity: s.fillColor ? 0.25 : 0, fill: !!s.fillColor};
  }
  function popupFor(group, p) {
    return function () {
      var box = el('div', null, 'mp-popup'); box.appendChild(el('div', group.title, 'mp-title'));
      var t = el('table'); box.appendChild(t); var k = group.kind;
      if (k === 'conflicts') {
        var r = D.rules[p[0]] || {id: '?', title: '', severity: 'low'};
        row(t, L_['rule'], r.id + ' ' + r.title);
        var s = el('tr'); s.appendChild(el('td', L_['severity'])); var sv = el('td', L_[r.severity], 'sev'); sv.style.color = D.severity[r.severity]; s.appendChild(sv); t.appendChild(s);
        row(t, L_['feature_a'], (D.layers[p[1]] || '') + ' · ' + p[2] + ' · ' + clsName(p[3]));
        row(t, L_['feature_b'], p[4] >= 0 ? (D.layers[p[4]] || '') + ' · ' + p[5] + ' · ' + clsName(p[6]) : L_['difference']);
        if (p[7] !== null) row(t, L_['unit'], p[7]);
        row(t, L_['area'], areaText(p[8]));
        if (p.length > 9 && p[9] !== null) row(t, L_['value'], fmt(p[9], 0) + ' ' + L_['yuan']);
      } else if (k === 'yield') {
        row(t, L_['id'], p[0]); row(t, L_['grade'], p[1] === null ? '—' : p[1]);
        (p[2] || []).forEach(function (kv) { row(t, kv[0], kv[1]); });
      } else if (k === 'faces') {
        row(t, L_['class'], clsName(p[0]) || '—');
      } else if (k === 'patches') {
        row(t, L_['patch_no'], p[0]); row(t, L_['diff_class'], p[1] + ' ' + (L_['diff_' + p[1]] || ''));
        row(t, D.compare ? D.compare[0] : '1', clsName(p[2])); row(t, D.compare ? D.compare[1] : '2', clsName(p[3]));
        if (p[4] !== null) row(t, L_['unit'], p[4]);
        row(t, L_['area'], areaText(p[5]));
      } else if (k === 'site') {
        row(t, L_['site_area'], areaText(p[1]));
      } else if (k === 'changes') {
        row(t, L_['change'], L_['change_' + p[4]]);
        row(t, D.editions[0], p[0] === null ? L_['no_land'] : p[0] + ' · ' + clsName(p[1]));
        row(t, D.editions[1], p[2] === null ? L_['no_land'] : p[2] + ' · ' + clsName(p[3]));
        if (p[5] !== null) row(t, L_['unit'], p[5]);
        row(t, L_['area'], areaText(p[6]));
      } else if (k === 'grid') {
        row(t, L_['grid_cell'], p[0]); row(t, L_['in_conflict'], areaText(p[1]));
        if (p[2] !== null) row(t, L_['share'], fmt(p[2] * 100, 1) + ' %');
      } else {
        if (p[0] !== null) row(t, L_['id'], p[0]);
        if (p[1] !== null) row(t, L_['class'], clsName(p[1]));
        (p[2] || []).forEach(function (kv) { row(t, kv[0], kv[1]); });
      }
      return box;
    };
  }

  // ---------------------------------------------------------------- panes: a fixed stacking order
  // plan fills at the bottom, then control lines, boundaries, conflicts and patches, the site on top,
  // whatever order the planner switches groups on in
  var PANES = {plans: 350, yield: 355, onemap: 360, changes: 365, controls: 400, base: 420, conflicts: 450, patches: 455, site: 470};
  Object.keys(PANES).forEach(function (k) { map.createPane('mp-' + k).style.zIndex = PANES[k]; });
  function paneOf(group) { return 'mp-' + (group.kind === 'patches' ? 'patches' : group.section); }

  // ---------------------------------------------------------------- groups and the search index
  var layers = {}, index = {}, counts = {conflicts: 0};
  // a search opens the most telling hit first: a conflict, then a patch, a zone, a parcel
  var RANK = {conflicts: 0, patches: 1, changes: 1, site: 1, zone: 2, yield: 3, points: 3, units: 4, grid: 4, plan: 5};
  function remember(id, layer) { if (id === null || id === undefined) return; var k = String(id).toLowerCase(); (index[k] = index[k] || []).push(layer); }
  D.groups.forEach(function (group) {
    var fg = L.featureGroup(), kind = group.kind;
    group.features.forEach(function (f) {
      var g = f[0], p = f[1], layer;
      if (kind === 'points') layer = L.circleMarker([g[1] / Q, g[0] / Q], {radius: 5, color: '#333', weight: 1, fillColor: '#1f78b4', fillOpacity: 0.9, pane: paneOf(group)});
      else { var st = styleOf(group, p); st.pane = paneOf(group); layer = L.polygon(latlngs(g), st); }
      if (kind !== 'boundary') layer.bindPopup(popupFor(group, p), {maxWidth: 420});
      layer._mpRank = RANK[kind] !== undefined ? RANK[kind] : 6;
      if (kind === 'conflicts') { remember(p[2], layer); remember(p[5], layer); }
      else if (kind === 'changes') { String(p[0] || '').split(',').forEach(function (i) { remember(i || null, layer); }); String(p[2] || '').split(',').forEach(function (i) { remember(i || null, layer); }); }
      else if (kind !== 'faces') remember(p[0], layer);
      fg.addLayer(layer);
    });
    layers[group.name] = fg;
    if (kind === 'conflicts') counts.conflicts += group.features.length;
    if (group.on) fg.addTo(map);
  });
  // leave room for the boxes on either side, so that nothing of the district hides under them
  map.fitBounds(D.bounds, {paddingTopLeft: [260, 20], paddingBottomRight: [370, 20]});

  // ---------------------------------------------------------------- title, banner and search (top left)
  var title = L.control({position: 'topleft'});
  title.onAdd = function () {
    var b = el('div', null, 'mp-box mp-head'); b.appendChild(el('div', D.title, 'mp-title'));
    if (D.banner) {
      b.appendChild(el('div', D.banner.text, D.banner.tone ? 'mp-verdict ' + D.banner.tone : 'mp-line'));
      (D.banner.lines || []).forEach(function (line) { b.appendChild(el('div', line, 'mp-line')); });
    } else {
      b.appendChild(el('div', L_['conflicts'] + ': ' + counts.conflicts.toLocaleString()));
    }
    L.DomEvent.disableClickPropagation(b); L.DomEvent.disableScrollPropagation(b); return b;
  };
  title.addTo(map);
  var search = L.control({position: 'topleft'});
  search.onAdd = function () {
    var b = el('div', null, 'mp-box mp-search'), input = el('input'), msg = el('div', null, 'msg'), list = el('div', null, 'hits');
    input.type = 'search'; input.placeholder = L_['search']; b.appendChild(input); b.appendChild(msg); b.appendChild(list);
    function show(hits) {
      hits = hits.slice().sort(function (a, c) { return a._mpRank - c._mpRank; });
      hits.forEach(function (h) { var fg = groupOf(h); if (fg && !map.hasLayer(fg)) { fg.addTo(map); refresh(); } });
      map.closePopup(); var bounds = L.featureGroup(hits).getBounds(); map.fitBounds(bounds, {maxZoom: 17, animate: false}); hits[0].openPopup();
    }
    function go() {
      var q = input.value.trim().toLowerCase(); msg.textContent = ''; list.textContent = ''; if (!q) return;
      var hits = index[q] || [];
      if (hits.length) { show(hits); msg.textContent = L_['found'].replace('{n}', hits.length); return; }
      var keys = Object.keys(index).filter(function (k) { return k.indexOf(q) >= 0; }).sort().slice(0, 12);
      if (!keys.length) { msg.textContent = L_['not_found']; return; }
      keys.forEach(function (k) { var a = el('div', k, 'hit'); a.addEventListener('click', function () { input.value = k; go(); }); list.appendChild(a); });
    }
    input.addEventListener('keydown', function (e) { if (e.key === 'Enter') go(); });
    L.DomEvent.disableClickPropagation(b); return b;
  };
  search.addTo(map);
  function groupOf(layer) { for (var n in layers) { if (layers[n].hasLayer(layer)) return layers[n]; } return null; }

  // ---------------------------------------------------------------- layer panel (top right), by section
  var panel = L.control({position: 'topright'}), boxes = {};
  panel.onAdd = function () {
    var b = el('div', null, 'mp-box mp-panel'), head = el('div', null, 'mp-panel-head'), body = el('div', null, 'mp-panel-body');
    head.appendChild(el('span', L_['layers'], 'mp-title')); var fold = el('button', '−', 'mp-fold'); fold.type = 'button'; head.appendChild(fold); b.appendChild(head); b.appendChild(body);
    fold.addEventListener('click', function () { var hide = body.style.display !== 'none'; body.style.display = hide ? 'none' : ''; fold.textContent = hide ? '+' : '−'; });
    D.sections.forEach(function (sec) {
      var mine = D.groups.filter(function (g) { return g.section === sec[0]; }); if (!mine.length) return;
      var box = el('div', null, 'mp-section'), h = el('div', null, 'mp-section-head'), all = el('input'), items = el('div', null, 'mp-section-items');
      all.type = 'checkbox'; h.appendChild(all); var caret = el('span', mine.some(function (g) { return g.on; }) ? '▾ ' : '▸ ', 'caret'); h.appendChild(caret); h.appendChild(el('span', sec[1])); box.appendChild(h); box.appendChild(items);
      if (!mine.some(function (g) { return g.on; })) items.style.display = 'none';
      caret.addEventListener('click', function () { var open = items.style.display === 'none'; items.style.display = open ? '' : 'none'; caret.textContent = open ? '▾ ' : '▸ '; });
      all.addEventListener('change', function () { mine.forEach(function (g) { setOn(g.name, all.checked); }); refresh(); });
      mine.forEach(function (g) {
        var lab = el('label', null, 'mp-item'), cb = el('input'); cb.type = 'checkbox'; cb.checked = map.hasLayer(layers[g.name]);
        cb.addEventListener('change', function () { setOn(g.name, cb.checked); refresh(); });
        lab.appendChild(cb); lab.appendChild(el('span', g.title + ' (' + (g.count !== undefined ? g.count : g.features.length).toLocaleString() + ')')); items.appendChild(lab); boxes[g.name] = cb;
      });
      box._all = all; box._names = mine.map(function (g) { return g.name; }); body.appendChild(box); sections.push(box);
    });
    L.DomEvent.disableClickPropagation(b); L.DomEvent.disableScrollPropagation(b); return b;
  };
  var sections = [];
  function setOn(name, on) { if (on) layers[name].addTo(map); else map.removeLayer(layers[name]); }
  panel.addTo(map);

  // ---------------------------------------------------------------- legend (bottom right): what is shown
  var legend = L.control({position: 'bottomright'}), legendBox;
  legend.onAdd = function () { legendBox = el('div', null, 'mp-box mp-legend'); L.DomEvent.disableScrollPropagation(legendBox); return legendBox; };
  legend.addTo(map);
  function visible(kind) { return D.groups.some(function (g) { return g.kind === kind && map.hasLayer(layers[g.name]); }); }
  function drawLegend() {
    var b = legendBox; b.textContent = ''; b.appendChild(el('div', L_['legend'], 'mp-title'));
    function line(s, text) { var r = el('div', null, 'row'); r.appendChild(s); r.appendChild(document.createTextNode(text)); b.appendChild(r); }
    if (visible('site')) { b.appendChild(el('h4', L_['site'])); line(swatch('transparent', '#0050ff'), L_['site']); }
    if (visible('conflicts')) { b.appendChild(el('h4', L_['conflicts'])); ['high', 'medium', 'low'].forEach(function (s) { line(swatch(D.severity[s], D.severity[s]), L_['severity'] + ' ' + L_[s]); }); }
    if (visible('patches')) { b.appendChild(el('h4', L_['patches'])); ['02', '03'].forEach(function (k) { line(swatch(D.diff[k], D.diff[k]), k + ' ' + L_['diff_' + k]); }); }
    var zones = D.groups.filter(function (g) { return g.kind === 'zone' && map.hasLayer(layers[g.name]); });
    if (zones.length) { b.appendChild(el('h4', L_['group_controls'])); zones.forEach(function (g) { var s = g.style || {}; line(swatch(s.fillColor, s.color, !!s.dashArray), g.title); }); }
    if (visible('changes')) { b.appendChild(el('h4', L_['group_changes'])); ['added', 'removed', 'reclassified', 'same'].forEach(function (k) { if (D.groups.some(function (g) { return g.name === 'changes:' + k && map.hasLayer(layers[g.name]); })) line(swatch(D.changes[k], D.changes[k]), L_['change_' + k]); }); }
    if (visible('grid')) { b.appendChild(el('h4', L_['grid_level'] + ' · ' + L_['share'])); var lo = 0; D.choropleth.forEach(function (c, i) { var hi = D.breaks[i]; line(swatch(c, '#888'), hi === undefined ? '> ' + fmt(lo * 100, 0) + ' %' : fmt(lo * 100, 0) + '–' + fmt(hi * 100, 0) + ' %'); lo = hi; }); }
    if (visible('yield')) { b.appendChild(el('h4', L_['yield_grade'])); ['A', 'B', 'C', 'D'].forEach(function (k) { line(swatch(D.grades[k], '#444'), k); }); }
    if (visible('plan') || visible('faces')) { b.appendChild(el('h4', L_['class'])); D.level1.forEach(function (k) { line(swatch(k[2], '#777'), k[0] + ' ' + k[1]); }); }
  }
  function refresh() {
    sections.forEach(function (box) { var on = box._names.filter(function (n) { return map.hasLayer(layers[n]); }).length; box._all.checked = on === box._names.length; box._all.indeterminate = on > 0 && on < box._names.length; box._names.forEach(function (n) { boxes[n].checked = map.hasLayer(layers[n]); }); });
    drawLegend();
    var c = map.getContainer(); c.setAttribute('data-visible', Object.keys(layers).filter(function (n) { return map.hasLayer(layers[n]); }).length);
  }

  // ---------------------------------------------------------------- scale, north arrow, measuring (bottom left)
  L.control.scale({imperial: false, maxWidth: 160, position: 'bottomleft'}).addTo(map);
  var north = L.control({position: 'bottomleft'});
  north.onAdd = function () {
    var b = el('div', null, 'mp-north'); var svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg'); svg.setAttribute('width', '34'); svg.setAttribute('height', '46'); svg.setAttribute('viewBox', '0 0 34 46');
    var up = document.createElementNS('http://www.w3.org/2000/svg', 'path'); up.setAttribute('d', 'M17 4 L27 34 L17 28 L7 34 Z'); up.setAttribute('fill', '#222'); svg.appendChild(up);
    var n = document.createElementNS('http://www.w3.org/2000/svg', 'text'); n.setAttribute('x', '17'); n.setAttribute('y', '45'); n.setAttribute('text-anchor', 'middle'); n.setAttribute('font-size', '11'); n.textContent = L_['north']; svg.appendChild(n);
    b.appendChild(svg); b.title = L_['north']; return b;
  };
  north.addTo(map);
  var measure = L.control({position: 'bottomleft'});
  measure.onAdd = function () {
    var b = el('div', null, 'mp-box mp-measure'), btn = el('button', '⊢⊣ ' + L_['measure']), out = el('div', null, 'out'); btn.type = 'button'; b.appendChild(btn); b.appendChild(out);
    var on = false, pts = [], line = null, shape = null;
    function metres(a, c) { return map.distance(a, c); }
    function areaM2(ll) { // planar area in a local equirectangular frame: fine at district scale
      if (ll.length < 3) return 0; var R = 6378137, lat0 = ll[0].lat * Math.PI / 180, s = 0, xy = ll.map(function (p) { return [R * p.lng * Math.PI / 180 * Math.cos(lat0), R * p.lat * Math.PI / 180]; });
      for (var i = 0; i < xy.length; i++) { var j = (i + 1) % xy.length; s += xy[i][0] * xy[j][1] - xy[j][0] * xy[i][1]; } return Math.abs(s) / 2;
    }
    function report() {
      var d = 0; for (var i = 1; i < pts.length; i++) d += metres(pts[i - 1], pts[i]);
      out.textContent = ''; if (!pts.length) { out.appendChild(el('div', L_['measure_hint'])); return; }
      out.appendChild(el('div', L_['distance'] + ': ' + (d >= 1000 ? fmt(d / 1000, 3) + ' ' + L_['km'] : fmt(d, 1) + ' ' + L_['m'])));
      if (pts.length >= 3) out.appendChild(el('div', L_['area'] + ': ' + areaText(areaM2(pts))));
    }
    function clear() { pts = []; if (line) map.removeLayer(line); if (shape) map.removeLayer(shape); line = shape = null; }
    function add(e) { pts.push(e.latlng); if (line) map.removeLayer(line); if (shape) map.removeLayer(shape); line = L.polyline(pts, {color: '#0050ff', weight: 2, dashArray: '4 4'}).addTo(map); if (pts.length >= 3) shape = L.polygon(pts, {color: '#0050ff', weight: 1, fillOpacity: 0.1}).addTo(map); report(); }
    btn.addEventListener('click', function () { on = !on; b.classList.toggle('active', on); clear(); if (on) { map.doubleClickZoom.disable(); map.on('click', add); report(); } else { map.off('click', add); map.doubleClickZoom.enable(); out.textContent = ''; } });
    map.on('dblclick', function () { if (on) { map.off('click', add); on = false; b.classList.remove('active'); map.doubleClickZoom.enable(); } });
    L.DomEvent.disableClickPropagation(b); b._measure = {add: add, areaM2: areaM2}; return b;
  };
  measure.addTo(map);

  refresh();
  var c = map.getContainer();
  c.setAttribute('data-groups', D.groups.length);
  c.setAttribute('data-conflicts', counts.conflicts);
  c.setAttribute('data-drawn', 'yes');
  window.multiplanSearch = function (q) { var i = c.querySelector('.mp-search input'); i.value = q; i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); };
  window.multiplanLayers = layers;
}
