// The admin dashboard's charts (emissions/templates/admin/emissions/dashboard.html), drawn with Chart.js from the
// figures the page carries as JSON (#dashboard-data). Figures arrive as exact decimal strings of tonnes; a chart
// only needs them as numbers. Each canvas gets data-rendered="true" once drawn.
"use strict";

(function () {
  const COLORS = ["#417690", "#79aec8", "#f5dd5d", "#e9967a", "#8fbc8f", "#b0a4e3", "#c4c4c4"];

  function tonnes(text) {
    return text === null || text === undefined ? null : parseFloat(text);
  }

  function shortLabel(value) {
    const label = this.getLabelForValue(value);
    return label.length > 28 ? label.slice(0, 27) + "…" : label;
  }

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas) {
      return;
    }
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options);
    new window.Chart(canvas, config);
    canvas.dataset.rendered = "true";
  }

  function start() {
    const source = document.getElementById("dashboard-data");
    if (!source || !window.Chart) {
      return;
    }
    const figures = JSON.parse(source.textContent);
    const months = figures.months;
    draw("chart-months", {
      type: "line",
      data: {
        labels: months.map((m) => m.month),
        datasets: [
          {
            label: "95 % low",
            data: months.map((m) => (m.uncertainty ? tonnes(m.uncertainty.low_t) : null)),
            borderWidth: 0,
            pointRadius: 0,
            backgroundColor: "rgba(121, 174, 200, 0.25)",
            fill: false,
          },
          {
            label: "95 % interval",
            data: months.map((m) => (m.uncertainty ? tonnes(m.uncertainty.high_t) : null)),
            borderWidth: 0,
            pointRadius: 0,
            backgroundColor: "rgba(121, 174, 200, 0.25)",
            fill: "-1",
          },
          {
            label: "t CO2e",
            // A month without results is a gap, not a zero (the months of a year still to come have none).
            data: months.map((m) => (m.count > 0 ? tonnes(m.co2e_t) : null)),
            borderColor: COLORS[0],
            backgroundColor: COLORS[0],
            tension: 0.2,
          },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, title: { display: true, text: "t CO2e" } } },
        // The band's lower edge needs no entry of its own.
        plugins: { legend: { labels: { filter: (item) => item.text !== "95 % low" } } },
      },
    });

    const categories = figures.categories.filter((c) => c.count > 0);
    draw("chart-categories", {
      type: "bar",
      data: {
        labels: categories.map((c) => c.label),
        datasets: [{ label: "t CO2e", data: categories.map((c) => tonnes(c.co2e_t)), backgroundColor: COLORS[1] }],
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } } },
    });

    // The named suppliers only: "N other suppliers" together would dwarf them (the table lists it).
    const suppliers = figures.suppliers.filter((s) => s.supplier_id !== null);
    draw("chart-suppliers", {
      type: "bar",
      data: {
        labels: suppliers.map((s) => s.name),
        datasets: [{ label: "t CO2e", data: suppliers.map((s) => tonnes(s.co2e_t)), backgroundColor: COLORS[0] }],
      },
      options: {
        indexAxis: "y",
        plugins: { legend: { display: false } },
        // Long company names cut on the axis (whole in the tooltip and the table).
        scales: { y: { ticks: { callback: shortLabel } } },
      },
    });

    draw("chart-quality", {
      type: "doughnut",
      data: {
        labels: figures.quality.map((q) => q.label),
        datasets: [
          {
            label: "t CO2e",
            data: figures.quality.map((q) => tonnes(q.co2e_t)),
            backgroundColor: figures.quality.map((q, i) => COLORS[i % COLORS.length]),
          },
        ],
      },
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
