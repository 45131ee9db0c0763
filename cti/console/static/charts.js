// Small inline-SVG charts (grouped bars); colours come from the stylesheet classes.

import { h, s } from "./dom.js";

export function barChart(rows, { label, series, title, testid, height = 180 }) {
  const width = Math.max(320, rows.length * series.length * 14 + rows.length * 12 + 60);
  const max = Math.max(1, ...rows.flatMap((r) => series.map((x) => Number(r[x.key]) || 0)));
  const left = 36;
  const bottom = 34;
  const plot = height - bottom - 8;
  const group = (width - left - 8) / Math.max(1, rows.length);
  const bar = Math.max(3, Math.min(24, (group - 6) / series.length));
  const chart = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title,
    "data-testid": testid, class: "chart" });
  chart.append(s("title", {}, title));
  for (const tick of [0, 0.5, 1]) {
    const y = 8 + plot - plot * tick;
    chart.append(s("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }));
    chart.append(s("text", { x: left - 4, y: y + 4, "text-anchor": "end", class: "tick" }, formatTick(max * tick)));
  }
  rows.forEach((row, i) => {
    const x0 = left + i * group + 3;
    series.forEach((serie, j) => {
      const value = Number(row[serie.key]) || 0;
      const barHeight = (plot * value) / max;
      chart.append(s("rect", { x: x0 + j * bar, y: 8 + plot - barHeight, width: bar - 1, height: barHeight,
        class: `series-${j}`, "data-value": value, "data-row": label(row), "data-series": serie.key },
      s("title", {}, `${label(row)} ${serie.label}: ${value}`)));
    });
    chart.append(s("text", { x: x0 + (bar * series.length) / 2, y: height - bottom + 14, "text-anchor": "middle",
      class: "tick" }, label(row)));
  });
  const legend = h("div", { class: "legend" },
    series.map((serie, j) => h("span", { class: `key series-${j}` }, serie.label)));
  return h("figure", { class: "chart" }, h("figcaption", {}, title), chart, legend);
}

function formatTick(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
