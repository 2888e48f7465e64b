/* global document, window */
// Live updates for the dashboard: polls the JSON the page names (data-live) every two seconds and
// writes the values into the elements marked data-run/data-field and the progress bars. A run page
// reloads once when its run changes state, so the gallery shows the final rows.
(function () {
  'use strict';
  var INTERVAL_MS = 2000;

  // Signed in by a ?token= link (the demo's): the cookie is set, so the token leaves the address bar.
  var here = new URL(window.location.href);
  if (here.searchParams.has('token')) {
    here.searchParams.delete('token');
    window.history.replaceState(null, '', here.pathname + here.search + here.hash);
  }

  for (var form of document.querySelectorAll('form[data-confirm]')) {
    form.addEventListener('submit', function (ev) {
      if (!window.confirm(ev.currentTarget.getAttribute('data-confirm'))) ev.preventDefault();
    });
  }

  // A face that cannot be loaded (an address only fal could reach, or none at all) shows a placeholder.
  function noPreview(img) {
    var box = document.createElement('div');
    box.className = 'face none';
    box.textContent = 'no preview';
    img.replaceWith(box);
  }
  for (var img of document.querySelectorAll('img.face')) {
    if (img.complete && img.naturalWidth === 0) noPreview(img);
    else img.addEventListener('error', function (ev) { noPreview(ev.currentTarget); });
  }

  var live = document.querySelector('[data-live]');
  if (!live) return;
  var url = live.getAttribute('data-live');
  var firstState = live.getAttribute('data-state');

  function apply(run) {
    for (var el of document.querySelectorAll('[data-run]')) {
      if (el.getAttribute('data-run') !== run.runId) continue;
      var name = el.getAttribute('data-field');
      if (name && run[name] !== undefined) {
        el.textContent = String(run[name]);
        if (name === 'state') el.className = 'badge ' + run.state;
      }
      if (el.classList.contains('bar')) {
        el.setAttribute('aria-valuenow', String(run.done));
        for (var seg of el.querySelectorAll('[data-bar]')) seg.style.width = run.bars[seg.getAttribute('data-bar')].toFixed(2) + '%';
      }
    }
  }

  function tick() {
    fetch(url, { headers: { accept: 'application/json' }, credentials: 'same-origin' })
      .then(function (res) {
        if (res.status === 401) {
          window.location.reload();
          return undefined;
        }
        return res.ok ? res.json() : undefined;
      })
      .then(function (data) {
        if (!data) return;
        var runs = data.runs || [data];
        runs.forEach(apply);
        if (firstState && !data.runs && data.state !== firstState) window.location.reload();
      })
      .catch(function () {})
      .finally(function () {
        window.setTimeout(tick, INTERVAL_MS);
      });
  }
  window.setTimeout(tick, INTERVAL_MS);
})();
