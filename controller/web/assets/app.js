// eve-diag dashboard: the heartbeat chart (uPlot) and the artifact search. No framework, no inline code.
(function () {
  'use strict';
  var data = document.getElementById('timeline-data');
  var chart = document.getElementById('chart');
  if (data && chart && window.uPlot) {
    var d = JSON.parse(data.textContent || '{}');
    var width = Math.max(320, chart.clientWidth - 10);
    new window.uPlot(
      {
        width: width,
        height: 260,
        scales: { x: { time: true }, s: { auto: true }, b: { auto: true } },
        series: [
          {},
          { label: 'kernel heartbeat age (s)', stroke: '#b3261e', width: 2, scale: 's', spanGaps: true, points: { show: true, size: 4 } },
          { label: 'agent heartbeat age (s)', stroke: '#2f6fb0', width: 2, scale: 's', spanGaps: true, points: { show: true, size: 4 } },
          { label: 'kernel beats', stroke: '#8a94a6', dash: [4, 4], scale: 'b', spanGaps: true },
        ],
        axes: [{}, { scale: 's', label: 'age (s)' }, { scale: 'b', side: 1, label: 'beats', grid: { show: false } }],
      },
      [d.t, d.kernelAge, d.agentAge, d.kernelBeats],
      chart,
    );
  }

  var search = document.getElementById('search');
  var artifact = document.getElementById('artifact');
  var matches = document.getElementById('matches');
  if (search && artifact) {
    var lines = artifact.querySelectorAll('.line');
    var timer = null;
    var apply = function () {
      var q = search.value;
      var re = null;
      if (q.length > 2 && q.charAt(0) === '/' && q.charAt(q.length - 1) === '/') {
        try {
          re = new RegExp(q.slice(1, -1), 'i');
        } catch {
          re = null;
        }
      }
      var n = 0;
      for (var i = 0; i < lines.length; i++) {
        var t = lines[i].querySelector('.t').textContent || '';
        var hit = q === '' ? false : re ? re.test(t) : t.toLowerCase().indexOf(q.toLowerCase()) >= 0;
        lines[i].classList.toggle('hit', hit);
        lines[i].classList.toggle('hidden', q !== '' && !hit);
        if (hit) n++;
      }
      if (matches) matches.textContent = q === '' ? '' : n + ' matching line' + (n === 1 ? '' : 's');
    };
    search.addEventListener('input', function () {
      clearTimeout(timer);
      timer = setTimeout(apply, 80);
    });
  }
})();
