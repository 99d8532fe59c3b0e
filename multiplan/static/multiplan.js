// multiplan's map: decode the embedded data, draw the groups, the layer panel, the legend and the search.
// Every attribute is written with textContent; layer-control names are escaped first.
function multiplanDraw(map, D) {
  var L_ = D.labels, Q = D.quantum;
  // Leaflet's layer control writes names with innerHTML: escape them first
  function escHTML(s) { return String(s).replace(/[&<>"'`$\\]/g, function (ch) { return '&#' + ch.charCodeAt(0) + ';'; }); }
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  function row(t, k, v) { var tr = el('tr'); tr.appendChild(el('td', k)); tr.appendChild(el('td', v)); t.appendChild(tr); }
  function ring(r) { var out = [], x = 0, y = 0; for (var i = 0; i < r.length; i += 2) { x += r[i]; y += r[i + 1]; out.push([y / Q, x / Q]); } return out; }
  function latlngs(g) { return g.map(function (poly) { return poly.map(ring); }); }
  function clsName(c) { if (c === null || c === undefined) return ''; var k = D.classes[c]; return k && k[0] !== c ? c + ' ' + k[0] : c; }
  function clsColour(c) { var k = c && D.classes[c]; return k ? k[1] : '#cccccc'; }
  function fmt(x, d) { return Number(x).toLocaleString(undefined, {minimumFractionDigits: d, maximumFractionDigits: d}); }
  var overlays = {}, index = {}, counts = {}, all = L.featureGroup();
  function remember(id, layer) { if (id === null || id === undefined) return; var k = String(id); (index[k] = index[k] || []).push(layer); }
  function popupFor(group, p) {
    return function () {
      var box = el('div', null, 'mp-popup'); box.appendChild(el('div', group.title, 'mp-title'));
      var t = el('table'); box.appendChild(t);
      if (group.kind === 'plan') { row(t, L_['class'], clsName(p[0])); }
      else if (group.kind === 'yield') { row(t, L_['id'], p[0]); row(t, L_['grade'], p[1] === null ? '—' : p[1]); (p[2] || []).forEach(function (kv) { row(t, kv[0], kv[1]); }); }
      else if (group.kind === 'conflicts') {
        var r = D.rules[p[0]] || {id: '?', title: '', severity: 'low'};
        row(t, L_['rule'], r.id + ' ' + r.title);
        var s = el('tr'); s.appendChild(el('td', L_['severity'])); var sv = el('td', L_[r.severity], 'sev'); sv.style.color = D.severity[r.severity]; s.appendChild(sv); t.appendChild(s);
        row(t, L_['feature_a'], (D.layers[p[1]] || '') + ' · ' + p[2] + ' · ' + clsName(p[3]));
        row(t, L_['feature_b'], p[4] >= 0 ? (D.layers[p[4]] || '') + ' · ' + p[5] + ' · ' + clsName(p[6]) : L_['difference']);
        if (p[7] !== null) row(t, L_['unit'], p[7]);
        row(t, L_['area'], fmt(p[8], 2) + ' ' + L_['m2'] + ' = ' + fmt(p[8] * 15 / 10000, 3) + ' ' + L_['mu']);
        if (p.length > 9 && p[9] !== null) row(t, L_['value'], fmt(p[9], 0) + ' ' + L_['yuan']);
      } else {
        if (p[0] !== null) row(t, L_['id'], p[0]);
        if (p[1] !== null) row(t, L_['class'], clsName(p[1]));
        (p[2] || []).forEach(function (kv) { row(t, kv[0], kv[1]); });
      }
      return box;
    };
  }
  D.groups.forEach(function (group) {
    var fg = L.featureGroup(), kind = group.kind;
    group.features.forEach(function (f) {
      var g = f[0], p = f[1], layer;
      if (kind === 'points') {
        layer = L.circleMarker([g[1] / Q, g[0] / Q], {radius: 5, color: '#333', weight: 1, fillColor: '#1f78b4', fillOpacity: 0.9});
      } else {
        var style;
        if (kind === 'plan') style = {color: '#777', weight: 0.4, fillColor: clsColour(p[0]), fillOpacity: 0.6};
        else if (kind === 'conflicts') { var r = D.rules[p[0]] || {severity: 'low'}; var c = D.severity[r.severity]; style = {color: c, weight: 1.2, fillColor: c, fillOpacity: 0.55}; }
        else if (kind === 'boundary') style = {color: '#222', weight: 2.5, fill: false};
        else if (kind === 'yield') { var gc = D.grades[p[1]] || '#bbbbbb'; style = {color: '#444', weight: 0.6, fillColor: gc, fillOpacity: 0.75}; }
        else if (kind === 'units') style = {color: '#555', weight: 1, dashArray: '2 4', fill: false};
        else { var s = group.style || {}; style = {color: s.color, weight: 1.5, dashArray: s.dashArray, fillColor: s.fillColor || s.color, fillOpacity: s.fillColor ? 0.25 : 0, fill: !!s.fillColor}; }
        layer = L.polygon(latlngs(g), style);
      }
      if (kind !== 'boundary') layer.bindPopup(popupFor(group, p), {maxWidth: 420});
      if (kind === 'conflicts') { remember(p[2], layer); remember(p[5], layer); }
      else if (kind !== 'plan') remember(p[0], layer);
      fg.addLayer(layer);
    });
    counts[group.name] = group.features.length;
    if (kind === 'conflicts') counts.conflicts = (counts.conflicts || 0) + group.features.length;
    overlays[escHTML(group.title) + ' (' + group.features.length.toLocaleString() + ')'] = fg;
    fg.addTo(map);
    if (kind !== 'plan') all.addLayer(fg);
  });
  var panel = L.control.layers(null, overlays, {collapsed: false, position: 'topright'}).addTo(map);
  L.DomEvent.disableScrollPropagation(panel.getContainer());
  L.control.scale({imperial: false, maxWidth: 160}).addTo(map);
  map.fitBounds(D.bounds);
  // title
  var title = L.control({position: 'topleft'});
  title.onAdd = function () { var b = el('div', null, 'mp-box'); b.appendChild(el('div', D.title, 'mp-title')); var n = counts['conflicts'] || 0; b.appendChild(el('div', L_['conflicts'] + ': ' + n.toLocaleString())); return b; };
  title.addTo(map);
  // legend
  var legend = L.control({position: 'bottomright'});
  legend.onAdd = function () {
    var b = el('div', null, 'mp-box mp-legend'); b.appendChild(el('div', L_['legend'], 'mp-title'));
    b.appendChild(el('h4', L_['conflicts']));
    ['high', 'medium', 'low'].forEach(function (s) { var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); sw.style.background = D.severity[s]; r.appendChild(sw); r.appendChild(document.createTextNode(L_['severity'] + ' ' + L_[s])); b.appendChild(r); });
    D.groups.forEach(function (g) {
      if (g.kind !== 'zone') return; var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); var s = g.style || {};
      sw.style.borderColor = s.color; sw.style.borderStyle = s.dashArray ? 'dashed' : 'solid'; sw.style.background = s.fillColor || 'transparent'; r.appendChild(sw); r.appendChild(document.createTextNode(g.title)); b.appendChild(r);
    });
    if (D.groups.some(function (g) { return g.kind === 'yield'; })) {
      b.appendChild(el('h4', L_['yield_grade']));
      ['A', 'B', 'C', 'D'].forEach(function (k) { var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); sw.style.background = D.grades[k]; r.appendChild(sw); r.appendChild(document.createTextNode(k)); b.appendChild(r); });
    }
    b.appendChild(el('h4', L_['class']));
    D.level1.forEach(function (k) { var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); sw.style.background = k[2]; r.appendChild(sw); r.appendChild(document.createTextNode(k[0] + ' ' + k[1])); b.appendChild(r); });
    L.DomEvent.disableScrollPropagation(b); return b;
  };
  legend.addTo(map);
  // search by id
  var search = L.control({position: 'topleft'});
  search.onAdd = function () {
    var b = el('div', null, 'mp-box mp-search'), input = el('input'), msg = el('div', null, 'msg');
    input.type = 'search'; input.placeholder = L_['search']; b.appendChild(input); b.appendChild(msg);
    function go() {
      var q = input.value.trim(); msg.textContent = ''; if (!q) return;
      var hits = index[q] || [];
      if (!hits.length) { msg.textContent = L_['not_found']; return; }
      var fg = L.featureGroup(hits); map.fitBounds(fg.getBounds(), {maxZoom: 17}); hits[0].openPopup();
      msg.textContent = L_['found'].replace('{n}', hits.length);
    }
    input.addEventListener('keydown', function (e) { if (e.key === 'Enter') go(); });
    L.DomEvent.disableClickPropagation(b); return b;
  };
  search.addTo(map);
  var c = map.getContainer();
  c.setAttribute('data-groups', D.groups.length);
  c.setAttribute('data-conflicts', counts['conflicts'] || 0);
  c.setAttribute('data-drawn', 'yes');
  window.multiplanSearch = function (q) { var i = c.querySelector('.mp-search input'); i.value = q; i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); };
}
