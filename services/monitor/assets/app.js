// casebus monitor: polls /api/overview and redraws the panels in place. Charts are
// plain SVG drawn here; every text goes through textContent, never innerHTML, so nothing
// read from the stream can inject markup.
(function () {
  'use strict';

  var SVG = 'http://www.w3.org/2000/svg';
  var LABELS = {
    customs: 'Customs',
    ip_center: 'IP center',
    public_security: 'Public security',
    procuratorate: 'Procuratorate',
    court: 'Court',
    unknown: 'Unknown'
  };
  var COLORS = {
    customs: '#2563eb',
    ip_center: '#059669',
    public_security: '#d97706',
    procuratorate: '#7c3aed',
    court: '#dc2626',
    unknown: '#6b7280'
  };
  var refreshMs = Number(document.body.getAttribute('data-refresh-ms')) || 2000;
  var generation = 0;

  // ---- small helpers --------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function label(agency) { return LABELS[agency] || agency; }
  function color(agency) { return COLORS[agency] || '#6b7280'; }

  function num(n) {
    if (n === null || n === undefined) { return '–'; }
    return Number(n).toLocaleString('en-US');
  }

  function rate(n) { return (Math.round(n * 10) / 10).toLocaleString('en-US'); }

  function bytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  function span(seconds) {
    if (seconds === null || seconds === undefined) { return '–'; }
    var s = Math.max(0, Math.floor(seconds));
    var d = Math.floor(s / 86400); s -= d * 86400;
    var h = Math.floor(s / 3600); s -= h * 3600;
    var m = Math.floor(s / 60); s -= m * 60;
    if (d > 0) { return d + 'd ' + h + 'h'; }
    if (h > 0) { return h + 'h ' + m + 'm'; }
    if (m > 0) { return m + 'm ' + s + 's'; }
    return s + 's';
  }

  function when(iso) {
    if (!iso) { return '–'; }
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return iso; }
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/:\d\dZ$/, 'Z');
  }

  function clock(iso) {
    var d = new Date(iso);
    return isNaN(d.getTime()) ? (iso || '–') : d.toISOString().slice(11, 19) + 'Z';
  }

  function row(tbody, cells, attrs) {
    var tr = document.createElement('tr');
    Object.keys(attrs || {}).forEach(function (k) { tr.setAttribute(k, attrs[k]); });
    cells.forEach(function (c) {
      var td = document.createElement('td');
      if (c instanceof Node) {
        td.appendChild(c);
      } else if (c && typeof c === 'object') {
        if (c.node) { td.appendChild(c.node); } else { td.textContent = c.text; }
        if (c.cls) { td.className = c.cls; }
        if (c.title) { td.title = c.title; }
      } else {
        td.textContent = c === undefined || c === null ? '' : String(c);
      }
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
    return tr;
  }

  function fill(tableId, rows, empty, columns) {
    var tbody = $(tableId).tBodies[0];
    clear(tbody);
    if (rows.length === 0) {
      var tr = document.createElement('tr');
      var td = el('td', empty, 'empty');
      td.colSpan = columns;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    return tbody;
  }

  function chips(id, counts) {
    var box = $(id);
    clear(box);
    counts.forEach(function (c) {
      var chip = el('span', null, 'chip');
      chip.appendChild(el('b', c.name));
      chip.appendChild(document.createTextNode(' ' + num(c.count)));
      box.appendChild(chip);
    });
  }

  function swatch(agency) {
    var s = el('span', null, 'swatch');
    s.style.background = color(agency);
    return s;
  }

  // ---- charts ---------------------------------------------------------------------

  // A line chart of several series over the same x range. series: [{key, color, values,
  // xs (optional, same length)}]; opts: {width, height, xLabels: [left, middle, right]}.
  function lineChart(node, series, opts) {
    clear(node);
    var w = opts.width, h = opts.height;
    var pad = { l: 48, r: 12, t: 12, b: 24 };
    var max = 0, n = 0, xmin = Infinity, xmax = -Infinity;
    series.forEach(function (s) {
      s.values.forEach(function (v, i) {
        if (v > max) { max = v; }
        var x = s.xs ? s.xs[i] : i;
        if (x < xmin) { xmin = x; }
        if (x > xmax) { xmax = x; }
      });
      n = Math.max(n, s.values.length);
    });
    if (!isFinite(xmin)) { xmin = 0; xmax = 1; }
    if (xmax === xmin) { xmax = xmin + 1; }
    var top = niceMax(max);
    var plotW = w - pad.l - pad.r, plotH = h - pad.t - pad.b;
    function X(x) { return pad.l + (x - xmin) / (xmax - xmin) * plotW; }
    function Y(v) { return pad.t + plotH - (v / top) * plotH; }
    for (var g = 0; g <= 4; g += 1) {
      var gv = top * g / 4;
      var gy = Y(gv);
      node.appendChild(svg('line', { x1: pad.l, x2: w - pad.r, y1: gy, y2: gy, 'class': 'gridline' }));
      var t = svg('text', { x: pad.l - 6, y: gy + 4, 'text-anchor': 'end', 'class': 'axis' });
      t.textContent = gv >= 1000 ? Math.round(gv).toLocaleString('en-US') : String(Math.round(gv * 10) / 10);
      node.appendChild(t);
    }
    (opts.xLabels || []).forEach(function (text, i, all) {
      var x = pad.l + plotW * (all.length === 1 ? 0 : i / (all.length - 1));
      var anchor = i === 0 ? 'start' : (i === all.length - 1 ? 'end' : 'middle');
      var t = svg('text', { x: x, y: h - 6, 'text-anchor': anchor, 'class': 'axis' });
      t.textContent = text;
      node.appendChild(t);
    });
    series.forEach(function (s) {
      if (s.values.length === 0) { return; }
      var points = s.values.map(function (v, i) {
        var x = s.xs ? s.xs[i] : i;
        return X(x).toFixed(1) + ',' + Y(v).toFixed(1);
      });
      node.appendChild(svg('polyline', {
        points: points.join(' '),
        fill: 'none',
        stroke: s.color,
        'stroke-width': 2,
        'class': 'series',
        'data-series': s.key,
        'data-total': String(s.values.reduce(function (a, b) { return a + b; }, 0))
      }));
      var last = s.values.length - 1;
      node.appendChild(svg('circle', {
        cx: X(s.xs ? s.xs[last] : last), cy: Y(s.values[last]), r: 3, fill: s.color
      }));
    });
  }

  function niceMax(v) {
    if (v <= 0) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    var nice = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return nice * p;
  }

  function sparkline(values) {
    var w = 90, h = 22;
    var s = svg('svg', { width: w, height: h, viewBox: '0 0 ' + w + ' ' + h, 'class': 'spark' });
    if (values.length < 2) { return s; }
    var max = Math.max.apply(null, values.concat([1]));
    var pts = values.map(function (v, i) {
      return (i / (values.length - 1) * (w - 2) + 1).toFixed(1) + ',' + (h - 1 - v / max * (h - 2)).toFixed(1);
    });
    s.appendChild(svg('polyline', { points: pts.join(' '), fill: 'none', stroke: '#2563eb', 'stroke-width': 1.5 }));
    return s;
  }

  // ---- panels ---------------------------------------------------------------------

  function renderKpis(d) {
    $('kpi-events').textContent = num(d.throughput.total_last_hour);
    $('kpi-rate').textContent = rate(d.throughput.per_minute_last_5);
    var lag = d.consumers.reduce(function (m, c) { return Math.max(m, c.lag); }, 0);
    $('kpi-lag').textContent = num(lag);
    $('kpi-dlq').textContent = num(d.dead_letters.stored);
    $('kpi-verify').textContent = num(d.verification_failures.messages);
    $('kpi-overdue').textContent = num(d.overdue.total);
    $('kpi-services').textContent = num(d.services.instances.length);
    $('kpi-dlq').parentNode.classList.toggle('alert', d.dead_letters.stored > 0);
    $('kpi-verify').parentNode.classList.toggle('alert', d.verification_failures.messages > 0);
    $('kpi-overdue').parentNode.classList.toggle('warn', d.overdue.total > 0);
  }

  function renderProblems(d) {
    var box = $('problems');
    clear(box);
    var keys = Object.keys(d.problems || {});
    box.hidden = keys.length === 0;
    keys.forEach(function (k) {
      var p = el('p');
      p.appendChild(el('b', k + ': '));
      p.appendChild(document.createTextNode(d.problems[k]));
      box.appendChild(p);
    });
  }

  function renderThroughput(d) {
    var t = d.throughput;
    var series = t.agencies.map(function (a) {
      return { key: a.agency, color: color(a.agency), values: a.per_minute };
    });
    lineChart($('throughput-chart'), series, {
      width: 900, height: 260, xLabels: ['60 min ago', '30 min ago', 'now']
    });
    var tbody = fill('throughput-table', t.agencies, 'no events yet', 4);
    t.agencies.forEach(function (a) {
      var name = el('span');
      name.appendChild(swatch(a.agency));
      name.appendChild(document.createTextNode(label(a.agency)));
      row(tbody, [
        name,
        { text: num(a.total_last_hour), cls: 'num total' },
        { text: rate(a.per_minute_last_5), cls: 'num' },
        { text: num(a.per_minute[a.per_minute.length - 1]), cls: 'num' }
      ], { 'data-agency': a.agency, 'data-total': String(a.total_last_hour) });
    });
    chips('event-types', d.event_types.slice(0, 16));
  }

  function renderConsumers(d) {
    var tbody = fill('consumers-table', d.consumers, 'no durable consumers', 7);
    d.consumers.forEach(function (c) {
      var name = el('div');
      name.appendChild(el('div', c.service));
      name.appendChild(el('div', c.name + (c.stream === 'CASES' ? '' : ' on ' + c.stream), 'sub'));
      row(tbody, [
        name,
        { text: num(c.lag), cls: 'num' + (c.lag > 1000 ? ' bad' : '') },
        { text: num(c.pending), cls: 'num' },
        { text: num(c.ack_pending), cls: 'num', title: num(c.redelivered) + ' redelivered' },
        { text: num(c.ack_floor_sequence), cls: 'num' },
        { text: c.active ? 'pulling' : 'idle', cls: c.active ? 'ok' : 'muted' },
        sparkline(c.lag_history)
      ], { 'data-consumer': c.name, 'data-lag': String(c.lag) });
    });
  }

  function renderStreams(d) {
    var cases = d.streams.filter(function (s) { return s.name === 'CASES'; })[0];
    var hist = cases ? cases.history : [];
    var start = Date.parse(d.generated_at) / 1000 - 3600;
    hist = hist.filter(function (h) { return h[0] >= start; });
    lineChart($('streams-chart'), [{
      key: 'CASES', color: '#2563eb',
      values: hist.map(function (h) { return h[1]; }),
      xs: hist.map(function (h) { return h[0]; })
    }], { width: 600, height: 160, xLabels: hist.length ? ['messages in CASES', 'now'] : ['no samples yet'] });
    var tbody = fill('streams-table', d.streams, 'no streams', 6);
    d.streams.forEach(function (s) {
      row(tbody, s.exists ? [
        s.name,
        { text: num(s.messages), cls: 'num' },
        { text: bytes(s.bytes), cls: 'num' },
        { text: num(s.first_sequence) + '–' + num(s.last_sequence), cls: 'num' },
        { text: num(s.consumers), cls: 'num' },
        { text: rate(s.growth_per_minute) + ' msg · ' + bytes(Math.round(s.bytes_per_minute)), cls: 'num' }
      ] : [s.name, { text: 'missing: provision the streams', cls: 'bad' }, '', '', '', ''],
      { 'data-stream': s.name, 'data-messages': String(s.messages) });
    });
  }

  function renderDeadLetters(d) {
    var dl = d.dead_letters;
    $('dlq-counts').textContent = num(dl.stored) + ' stored';
    chips('dlq-codes', dl.by_code);
    var latest = dl.latest.slice(0, 12);
    var tbody = fill('dlq-table', latest, 'no dead letters', 5);
    latest.forEach(function (l) {
      var original = l.original_stream + (l.original_sequence ? ' #' + l.original_sequence : '') +
        (l.original_subject ? ' ' + l.original_subject : '');
      row(tbody, [
        { text: clock(l.stored_at), cls: 'nowrap', title: when(l.stored_at) },
        { text: l.consumer, cls: 'nowrap' },
        { text: l.code, cls: l.verification ? 'bad' : 'warn' },
        { text: l.reason, cls: 'reason' },
        original
      ], { 'data-code': l.code, 'data-sequence': String(l.sequence) });
    });
  }

  function renderVerification(d) {
    var v = d.verification_failures;
    $('verify-counts').textContent = num(v.messages) + ' messages';
    chips('verify-codes', v.by_code);
    var tbody = fill('verification-table', v.latest, 'no verification failures', 6);
    v.latest.forEach(function (f) {
      row(tbody, [
        f.case_id || '–',
        f.stream + (f.sequence ? ' #' + f.sequence : ''),
        { text: f.code, cls: 'bad' },
        { text: f.reason, cls: 'reason' },
        f.consumers.join(', '),
        when(f.first_seen)
      ], { 'data-code': f.code });
    });
  }

  function renderOverdue(d) {
    var o = d.overdue;
    var source = o.source === 'gateway' ? 'from the gateway' :
      o.source === 'stream' ? 'folded from the CASES stream' : 'not read yet';
    $('overdue-source').textContent = num(o.total) + ' in all · ' + source +
      (o.updated_at ? ' · read ' + when(o.updated_at) : '');
    var tbody = fill('overdue-agencies', o.by_agency, 'no overdue hand-offs', 4);
    o.by_agency.forEach(function (a) {
      var name = el('span');
      name.appendChild(swatch(a.agency));
      name.appendChild(document.createTextNode(label(a.agency)));
      row(tbody, [
        name,
        { text: num(a.count), cls: 'num' },
        when(a.oldest_due_at),
        { text: span(a.oldest_overdue_seconds), cls: 'num bad' }
      ], { 'data-agency': a.agency, 'data-count': String(a.count) });
    });
    tbody = fill('overdue-table', o.handoffs, 'no overdue hand-offs', 8);
    o.handoffs.forEach(function (h) {
      row(tbody, [
        { text: span(h.overdue_seconds), cls: 'num bad' },
        h.case_id,
        h.handoff_id,
        h.kind.toLowerCase().replace(/_/g, ' '),
        h.from_office,
        h.to_office || label(h.to_agency),
        h.status.toLowerCase(),
        when(h.due_at)
      ], { 'data-case': h.case_id, 'data-agency': h.to_agency });
    });
  }

  function renderServices(d) {
    var s = d.services;
    $('services-updated').textContent = s.updated_at ? 'found through $SRV · ' + when(s.updated_at) : '';
    var tbody = fill('services-table', s.instances, 'no service answered $SRV', 11);
    s.instances.forEach(function (i) {
      var dot = el('span', null, 'dot ' + (i.errors > 0 || i.last_error ? 'warn' : 'ok'));
      var details = Object.keys(i.details).map(function (k) { return k + ' ' + num(i.details[k]); }).join(' · ');
      row(tbody, [
        dot,
        i.name,
        i.office || '–',
        i.version,
        { text: span(i.uptime_seconds), cls: 'num' },
        { text: num(i.requests), cls: 'num' },
        { text: num(i.errors), cls: 'num' + (i.errors > 0 ? ' warn' : '') },
        i.consumer || '–',
        { text: i.rules_digest ? i.rules_digest.replace('sha256:', '').slice(0, 12) : '–',
          cls: 'mono' + (s.rules_differ && i.rules_digest ? ' warn' : ''),
          title: i.rules_digest || 'names no deadline rules digest' },
        { text: details, cls: 'details', title: i.last_error ? 'last error: ' + i.last_error : '' },
        { text: i.id.slice(0, 8), cls: 'mono' }
      ], { 'data-service': i.name, 'data-office': i.office });
    });
  }

  function render(d) {
    renderKpis(d);
    renderProblems(d);
    renderThroughput(d);
    renderConsumers(d);
    renderStreams(d);
    renderDeadLetters(d);
    renderVerification(d);
    renderOverdue(d);
    renderServices(d);
  }

  function setStatus(text, bad) {
    var s = $('status');
    s.textContent = text;
    s.classList.toggle('bad', !!bad);
  }

  function load() {
    return fetch('/api/overview', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } })
      .then(function (res) {
        if (res.status === 401) {
          window.location.assign('/login');
          return null;
        }
        if (!res.ok) { throw new Error('HTTP ' + res.status); }
        return res.json();
      })
      .then(function (d) {
        if (!d) { return; }
        render(d);
        generation += 1;
        document.body.setAttribute('data-generation', String(generation));
        document.body.setAttribute('data-loaded', '1');
        setStatus('live · updated ' + when(d.generated_at), false);
      })
      .catch(function (e) { setStatus('not updated: ' + e.message, true); });
  }

  function loop() {
    load().then(function () { window.setTimeout(loop, refreshMs); });
  }
  loop();
})();
