// The dashboard: reads the API's metrics endpoints as of the chosen day and draws them with
// the vendored Chart.js (the global `Chart`). No build step, no framework: this file is
// served as it is.
"use strict";

(() => {
  // ---- formatting (the browser's locale; instants are UTC like the API's) ----

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  const monthName = new Intl.DateTimeFormat(undefined, {
    month: "short",
    year: "numeric",
    timeZone: "UTC",
  });
  const dayName = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });
  const MONTH = /^(\d{4})-(\d{2})$/;
  const DAY = /^\d{4}-\d{2}-\d{2}$/;

  // Decimals arrive as strings ("12.65") and rates may be null: null stays null, so that a
  // chart leaves a gap and a figure shows a dash instead of a made-up zero.
  function num(value) {
    if (value === null || value === undefined || value === "") return null;
    const n = Number(value);
    return Number.isFinite(n) ? n : null;
  }

  const DASH = "–";
  const fmtInt = (v) => (num(v) === null ? DASH : integer.format(num(v)));
  const fmtRate = (v) => (num(v) === null ? DASH : percent.format(num(v)));

  function fmtMoney(v, currency) {
    const n = num(v);
    if (n === null) return DASH;
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(n);
    } catch {
      // Not an ISO 4217 code Intl knows: the amount and the code as the API gave it.
      return `${decimal.format(n)} ${currency ?? ""}`.trim();
    }
  }

  function fmtMonth(label) {
    const m = MONTH.exec(String(label));
    return m ? monthName.format(new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1))) : label;
  }

  function fmtDay(instant) {
    if (!instant) return DASH;
    const d = new Date(instant);
    return Number.isNaN(d.getTime()) ? DASH : dayName.format(d);
  }

  // A campaign runs up to its `ends`, excluded: its last day is the one before a midnight end.
  function lastSecond(instant) {
    const d = new Date(instant);
    return instant && !Number.isNaN(d.getTime())
      ? new Date(d.getTime() - 1000).toISOString()
      : null;
  }

  const humanize = (name) => {
    const text = String(name).replaceAll("_", " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  };

  const list = (value) => (Array.isArray(value) ? value : []);
  const object = (value) => (value !== null && typeof value === "object" ? value : {});

  // ---- the page's furniture ----

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function figures(id, rows) {
    $(id).replaceChildren(
      ...rows.map(([label, value]) => el("div", {}, el("dt", {}, label), el("dd", {}, value))),
    );
  }

  const COLORS = {
    blue: "#2563a8",
    sky: "#7fb3e6",
    green: "#2e8b57",
    amber: "#d98a1c",
    red: "#c0392b",
    grey: "#9aa3ad",
    purple: "#7b4ea3",
    teal: "#1f8a8a",
  };
  const TIER_COLORS = { bronze: "#b0793f", silver: "#9aa3ad", gold: "#d4a72c" };
  const PALETTE = Object.values(COLORS);

  // ---- charts ----

  // Level labels, every other one left out where they do not fit: slanted ones sit off
  // their bars.
  const monthTicks = {
    maxRotation: 0,
    autoSkipPadding: 8,
    callback(value) {
      return fmtMonth(this.getLabelForValue(value));
    },
  };
  const nameTicks = {
    callback(value) {
      return humanize(this.getLabelForValue(value));
    },
  };
  const countTicks = { precision: 0, callback: (v) => integer.format(v) };
  const monthTitle = { title: (items) => (items.length ? fmtMonth(items[0].label) : "") };

  // Labels stay the API's own keys ("2026-01", "at_risk"): ticks, legends and tooltips
  // format them, so what a chart holds can be compared with what the API answered.
  function draw(canvasId, config) {
    if (typeof Chart === "undefined") {
      throw new Error("the chart library (/static/chart.umd.min.js) did not load");
    }
    const canvas = $(canvasId);
    const chart = Chart.getChart(canvas);
    if (chart) {
      chart.data = config.data;
      chart.options = config.options ?? {};
      chart.update();
      return chart;
    }
    return new Chart(canvas, config);
  }

  // A failed figure must not keep showing the previous day's numbers under the new date.
  function blank(canvasId) {
    const chart = typeof Chart === "undefined" ? undefined : Chart.getChart($(canvasId));
    if (chart) {
      chart.data = { labels: [], datasets: [] };
      chart.update();
    }
  }

  function noData(card, empty) {
    let note = card.querySelector(".empty");
    if (!note) {
      note = el("p", { class: "empty" }, "Nothing to show up to this date.");
      card.querySelector("h2").after(note);
    }
    note.hidden = !empty;
  }

  // ---- what each card reads and how it draws it ----

  let currency = "";

  const SECTIONS = [
    {
      card: "card-tiers",
      reads: () => [["/metrics/tiers", {}]],
      render(tiers) {
        const perTier = Object.entries(object(tiers.members_per_tier));
        draw("chart-tiers", {
          type: "bar",
          data: {
            labels: perTier.map(([tier]) => tier),
            datasets: [
              {
                label: "Members",
                data: perTier.map(([, n]) => num(n)),
                backgroundColor: perTier.map(
                  ([tier], i) => TIER_COLORS[tier] ?? PALETTE[i % PALETTE.length],
                ),
              },
            ],
          },
          options: {
            plugins: { legend: { display: false } },
            scales: { x: { ticks: nameTicks }, y: { beginAtZero: true, ticks: countTicks } },
          },
        });
        return perTier.length > 0;
      },
      clear: () => blank("chart-tiers"),
    },
    {
      card: "card-activity",
      reads: (p) => [["/metrics/churn", { months: p.months }]],
      render(churn) {
        const members = object(churn.members);
        const statuses = ["active", "at_risk", "churned", "never_purchased"];
        const total = statuses.reduce((sum, s) => sum + (num(members[s]) ?? 0), 0);
        const windows = object(churn.windows);
        figures("figures-activity", [
          ["Members", fmtInt(total)],
          ["Active", fmtInt(members.active)],
          ["Repeat purchase rate", fmtRate(churn.repeat_purchase_rate)],
        ]);
        draw("chart-activity", {
          type: "doughnut",
          data: {
            labels: statuses,
            datasets: [
              {
                label: "Members",
                data: statuses.map((s) => num(members[s])),
                backgroundColor: [COLORS.green, COLORS.amber, COLORS.red, COLORS.grey],
              },
            ],
          },
          options: {
            plugins: {
              legend: {
                position: "right",
                labels: {
                  generateLabels(chart) {
                    const base = Chart.overrides.doughnut.plugins.legend.labels.generateLabels;
                    return base(chart).map((item) => ({ ...item, text: humanize(item.text) }));
                  },
                },
              },
              tooltip: {
                callbacks: {
                  label: (item) => `${humanize(item.label)}: ${fmtInt(item.raw)}`,
                },
              },
              subtitle: {
                display: num(windows.active_days) !== null,
                text: `Active: a purchase within ${windows.active_days} days; at risk: within ${windows.at_risk_days}`,
              },
            },
          },
        });
        return total > 0;
      },
      clear() {
        figures("figures-activity", []);
        blank("chart-activity");
      },
    },
    {
      card: "card-churn",
      reads: (p) => [["/metrics/churn", { months: p.months }]],
      render(churn) {
        const months = list(churn.months);
        draw("chart-churn", {
          type: "bar",
          data: {
            labels: months.map((m) => m.month),
            datasets: [
              {
                label: "Churned",
                data: months.map((m) => num(m.churned)),
                backgroundColor: COLORS.red,
                yAxisID: "y",
              },
              {
                label: "Reactivations",
                data: months.map((m) => num(m.reactivations)),
                backgroundColor: COLORS.green,
                yAxisID: "y",
              },
              {
                type: "line",
                label: "Churn rate",
                data: months.map((m) => num(m.churn_rate)),
                borderColor: COLORS.blue,
                backgroundColor: COLORS.blue,
                yAxisID: "rate",
              },
            ],
          },
          options: {
            maintainAspectRatio: false,
            interaction: { mode: "index", intersect: false },
            plugins: {
              tooltip: {
                callbacks: {
                  ...monthTitle,
                  label: (item) =>
                    item.dataset.yAxisID === "rate"
                      ? `${item.dataset.label}: ${fmtRate(item.raw)}`
                      : `${item.dataset.label}: ${fmtInt(item.raw)}`,
                },
              },
            },
            scales: {
              x: { ticks: monthTicks },
              y: {
                beginAtZero: true,
                ticks: countTicks,
                title: { display: true, text: "members" },
              },
              rate: {
                position: "right",
                beginAtZero: true,
                grid: { drawOnChartArea: false },
                ticks: { callback: (v) => percent.format(v) },
                title: { display: true, text: "churn rate" },
              },
            },
          },
        });
        return months.length > 0;
      },
      clear: () => blank("chart-churn"),
    },
    {
      card: "card-tier-moves",
      reads: (p) => [["/metrics/churn", { months: p.months }]],
      render(churn) {
        const months = list(churn.months);
        draw("chart-tier-moves", {
          type: "bar",
          data: {
            labels: months.map((m) => m.month),
            datasets: [
              {
                label: "Upgrades",
                data: months.map((m) => num(m.tier_upgrades)),
                backgroundColor: COLORS.blue,
              },
              {
                label: "Downgrades",
                data: months.map((m) => num(m.tier_downgrades)),
                backgroundColor: COLORS.amber,
              },
            ],
          },
          options: {
            maintainAspectRatio: false,
            interaction: { mode: "index", intersect: false },
            plugins: { tooltip: { callbacks: monthTitle } },
            scales: { x: { ticks: monthTicks }, y: { beginAtZero: true, ticks: countTicks } },
          },
        });
        return months.length > 0;
      },
      clear: () => blank("chart-tier-moves"),
    },
    {
      card: "card-value",
      reads: () => [["/metrics/value", {}]],
      render(value) {
        const cur = value.currency ?? currency;
        figures("figures-value", [
          ["Members with purchases", fmtInt(value.members_with_purchases)],
          ["Orders", fmtInt(value.orders)],
          ["Net spend", fmtMoney(value.net_spend, cur)],
          ["Average order", fmtMoney(value.average_order_value, cur)],
          ["Average customer value", fmtMoney(value.clv_average, cur)],
        ]);
        const months = list(value.clv_by_enrolment_month);
        draw("chart-clv", {
          type: "bar",
          data: {
            labels: months.map((m) => m.month),
            datasets: [
              {
                label: "Average customer value by enrolment month",
                data: months.map((m) => num(m.clv_average)),
                backgroundColor: COLORS.teal,
              },
            ],
          },
          options: {
            maintainAspectRatio: false,
            plugins: {
              legend: { display: false },
              tooltip: {
                callbacks: {
                  ...monthTitle,
                  label: (item) => `Average value: ${fmtMoney(item.raw, cur)}`,
                  afterLabel: (item) => `Members: ${fmtInt(months[item.dataIndex]?.members)}`,
                },
              },
            },
            scales: {
              x: { ticks: monthTicks, title: { display: true, text: "enrolment month" } },
              y: { beginAtZero: true, ticks: { callback: (v) => fmtMoney(v, cur) } },
            },
          },
        });
        return true;
      },
      clear() {
        figures("figures-value", []);
        blank("chart-clv");
      },
    },
    {
      card: "card-cohorts",
      reads: (p) => [["/metrics/cohorts", { months: p.months, by: p.by }]],
      render(cohorts) {
        return heatmap(list(cohorts.cohorts));
      },
      clear: () => $("cohorts").replaceChildren(),
    },
    {
      card: "card-liability",
      reads: (p) => [
        ["/metrics/liability", {}],
        ["/metrics/liability/history", { months: p.months }],
      ],
      render(now, history) {
        const cur = now.currency ?? history.currency ?? currency;
        currency = cur;
        figures("figures-liability", [
          ["Points outstanding", fmtInt(now.points_outstanding)],
          ["Value outstanding", fmtMoney(now.value_outstanding, cur)],
          ["Points pending", fmtInt(now.points_pending)],
          ["Owed by members", fmtInt(now.points_owed_by_members)],
          ["Expiring within 30 days", fmtInt(now.expiring_within_30_days)],
          ["Expiring within 90 days", fmtInt(now.expiring_within_90_days)],
          ["Breakage rate", fmtRate(now.breakage_rate)],
          ["Expected cost", fmtMoney(now.expected_cost, cur)],
        ]);
        const months = list(history.months);
        const points = (label, key, color) => ({
          label,
          data: months.map((m) => num(m[key])),
          borderColor: color,
          backgroundColor: color,
          yAxisID: "y",
        });
        draw("chart-liability", {
          type: "line",
          data: {
            labels: months.map((m) => m.month),
            datasets: [
              points("Points outstanding", "points_outstanding", COLORS.blue),
              points("Points pending", "points_pending", COLORS.sky),
              points("Points owed by members", "points_owed_by_members", COLORS.red),
              {
                label: "Expected cost",
                data: months.map((m) => num(m.expected_cost)),
                borderColor: COLORS.purple,
                backgroundColor: COLORS.purple,
                borderDash: [6, 4],
                yAxisID: "money",
              },
            ],
          },
          options: {
            maintainAspectRatio: false,
            interaction: { mode: "index", intersect: false },
            plugins: {
              tooltip: {
                callbacks: {
                  ...monthTitle,
                  label: (item) =>
                    item.dataset.yAxisID === "money"
                      ? `${item.dataset.label}: ${fmtMoney(item.raw, cur)}`
                      : `${item.dataset.label}: ${fmtInt(item.raw)}`,
                },
              },
            },
            scales: {
              x: { ticks: monthTicks, title: { display: true, text: "at each month's end" } },
              y: { beginAtZero: true, ticks: countTicks, title: { display: true, text: "points" } },
              money: {
                position: "right",
                beginAtZero: true,
                grid: { drawOnChartArea: false },
                ticks: { callback: (v) => fmtMoney(v, cur) },
                title: { display: true, text: cur || "value" },
              },
            },
          },
        });
        return true;
      },
      clear() {
        figures("figures-liability", []);
        blank("chart-liability");
      },
    },
    {
      card: "card-segments",
      reads: () => [["/segments", {}]],
      render(body) {
        const segments = list(body.segments);
        draw("chart-segments", {
          type: "bar",
          data: {
            labels: segments.map((s) => s.name),
            datasets: [
              {
                label: "Members",
                data: segments.map((s) => num(s.members)),
                backgroundColor: segments.map((_, i) => PALETTE[i % PALETTE.length]),
              },
            ],
          },
          options: {
            indexAxis: "y",
            maintainAspectRatio: false,
            onClick(_event, elements, chart) {
              if (elements.length) pickSegment(chart.data.labels[elements[0].index]);
            },
            onHover(event, elements) {
              event.native.target.style.cursor = elements.length ? "pointer" : "default";
            },
            plugins: {
              legend: { display: false },
              tooltip: { callbacks: { title: (items) => humanize(items[0]?.label ?? "") } },
            },
            scales: { x: { beginAtZero: true, ticks: countTicks }, y: { ticks: nameTicks } },
          },
        });
        const rules = Object.entries(object(body.rules));
        $("segment-rules").replaceChildren(
          ...rules.flatMap(([name, rule]) => [el("dt", {}, humanize(name)), el("dd", {}, rule)]),
        );
        const pickList = $("segment-pick");
        const picked = pickList.value;
        pickList.replaceChildren(
          pickList.options[0],
          ...segments.map((seg) =>
            el(
              "option",
              { value: String(seg.name) },
              `${humanize(seg.name)} (${fmtInt(seg.members)})`,
            ),
          ),
        );
        pickList.value = segments.some((seg) => seg.name === picked) ? picked : "";
        // The list follows the date: the same segment's members as of the new day.
        segmentMembers(pickList.value, null);
        return segments.length > 0;
      },
      clear() {
        blank("chart-segments");
        $("segment-rules").replaceChildren();
        $("segment-pick").value = "";
        segmentMembers("", null);
      },
    },
    {
      card: "card-campaigns",
      // The liability names the program's currency; without it, net spend is a plain number.
      reads: () => [
        ["/metrics/campaigns", {}],
        ["/metrics/liability", {}, { optional: true }],
      ],
      render(body, liability) {
        const campaigns = list(body.campaigns);
        const cur = liability.currency ?? currency;
        draw("chart-campaigns", {
          type: "bar",
          data: {
            labels: campaigns.map((c) => c.id),
            datasets: [
              {
                label: "Points issued",
                data: campaigns.map((c) => num(c.points_issued)),
                backgroundColor: COLORS.blue,
                yAxisID: "y",
              },
              {
                label: "Net spend",
                data: campaigns.map((c) => num(c.net_spend)),
                backgroundColor: COLORS.green,
                yAxisID: "money",
              },
            ],
          },
          options: {
            maintainAspectRatio: false,
            interaction: { mode: "index", intersect: false },
            plugins: {
              tooltip: {
                callbacks: {
                  label: (item) =>
                    item.dataset.yAxisID === "money"
                      ? `${item.dataset.label}: ${fmtMoney(item.raw, cur)}`
                      : `${item.dataset.label}: ${fmtInt(item.raw)}`,
                },
              },
            },
            scales: {
              y: { beginAtZero: true, ticks: countTicks, title: { display: true, text: "points" } },
              money: {
                position: "right",
                beginAtZero: true,
                grid: { drawOnChartArea: false },
                ticks: { callback: (v) => fmtMoney(v, cur) },
                title: { display: true, text: "net spend" },
              },
            },
          },
        });
        const head = [
          "Campaign",
          "Applies to",
          "Runs",
          "Members reached",
          "Events rewarded",
          "Points issued",
          "Net spend",
        ];
        $("campaigns").replaceChildren(
          el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            ...campaigns.map((c) =>
              el(
                "tr",
                {},
                el("td", {}, String(c.id ?? DASH)),
                el("td", {}, c.applies_to ? humanize(c.applies_to) : DASH),
                el("td", {}, `${fmtDay(c.starts)} – ${fmtDay(lastSecond(c.ends))}`),
                el("td", {}, fmtInt(c.members_reached)),
                el("td", {}, fmtInt(c.events_rewarded)),
                el("td", {}, fmtInt(c.points_issued)),
                el("td", {}, fmtMoney(c.net_spend, cur)),
              ),
            ),
          ),
        );
        return campaigns.length > 0;
      },
      clear() {
        blank("chart-campaigns");
        $("campaigns").replaceChildren();
      },
    },
  ];

  // ---- a segment's members, a page at a time (/segments/{name}/members) ----

  const SEGMENT_PAGE = 20;
  let segmentRequest = 0;
  let segmentDay = null;

  function pickSegment(name) {
    $("segment-pick").value = name;
    segmentMembers(name, null);
  }

  async function segmentMembers(name, after) {
    const mine = ++segmentRequest;
    const table = $("segment-members");
    const more = $("segment-more");
    const error = $("segment-members-error");
    if (!name || !segmentDay) {
      table.replaceChildren();
      more.hidden = true;
      error.hidden = true;
      return;
    }
    const query = { as_of: `${segmentDay}T23:59:59Z`, limit: String(SEGMENT_PAGE) };
    if (after) query.after = after;
    let body;
    try {
      body = await getJson(`/segments/${encodeURIComponent(name)}/members`, query);
    } catch (failure) {
      if (mine !== segmentRequest) return;
      table.replaceChildren();
      more.hidden = true;
      error.textContent = failure.message;
      error.hidden = false;
      return;
    }
    if (mine !== segmentRequest) return;
    error.hidden = true;
    const cur = currency;
    const head = ["Member", "Orders", "Net spend", "Last purchase", "R", "F", "M"];
    const rows = list(body.members).map((m) =>
      el(
        "tr",
        {},
        el("td", {}, String(m.member_id ?? DASH)),
        el("td", {}, fmtInt(m.orders)),
        el("td", {}, fmtMoney(m.net_spend, cur)),
        el("td", {}, fmtDay(m.last_purchase_at)),
        el("td", {}, fmtInt(m.recency_score)),
        el("td", {}, fmtInt(m.frequency_score)),
        el("td", {}, fmtInt(m.monetary_score)),
      ),
    );
    const headRow = el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)));
    headRow.children[4].title = "recency score (5: the most recent fifth)";
    headRow.children[5].title = "frequency score (5: the most orders)";
    headRow.children[6].title = "monetary score (5: the highest net spend)";
    table.replaceChildren(
      el("thead", {}, headRow),
      el(
        "tbody",
        {},
        ...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty" }, "No members."))]),
      ),
    );
    const next = body.next_after;
    more.hidden = !next;
    more.onclick = next ? () => segmentMembers(name, next) : null;
  }

  // ---- the cohort heat map: a table whose cells are shaded by their share ----

  // Light to dark blue as the share goes from 0 to 1 (the CSS legend's ramp).
  function shade(share) {
    const clamped = Math.min(1, Math.max(0, share));
    return `hsl(210 65% ${97 - clamped * 55}%)`;
  }

  function heatmap(cohorts) {
    const width = cohorts.reduce((w, c) => Math.max(w, list(c.retention).length), 0);
    const head = el(
      "tr",
      {},
      el("th", { scope: "col" }, "Cohort"),
      el("th", { scope: "col" }, "Members"),
      ...Array.from({ length: width }, (_, k) => el("th", { scope: "col" }, `Month ${k}`)),
    );
    const rows = cohorts.map((c) => {
      const retention = list(c.retention);
      const cells = Array.from({ length: width }, (_, k) => {
        const share = k < retention.length ? num(retention[k]) : null;
        if (share === null) {
          // Past as_of's month, or nothing to divide by: no share, not a zero.
          return el("td", { class: "cell none" }, "");
        }
        const td = el(
          "td",
          { class: share > 0.5 ? "cell dark" : "cell", "data-value": String(share) },
          percent.format(share),
        );
        td.title = `${fmtMonth(c.cohort)}, month ${k}: ${percent.format(share)} of ${fmtInt(c.members)}`;
        td.style.backgroundColor = shade(share);
        return td;
      });
      return el(
        "tr",
        { "data-cohort": String(c.cohort) },
        el("th", { scope: "row" }, fmtMonth(c.cohort)),
        el("td", {}, fmtInt(c.members)),
        ...cells,
      );
    });
    $("cohorts").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    return cohorts.length > 0;
  }

  // ---- loading ----

  // An API started with LOYALTY_API_TOKEN answers 401 without it: asked for once per tab
  // (every card's request waits for the same answer), kept for the tab's life only.
  const TOKEN_KEY = "loyalty-api-token";
  let asking = null;

  function askForToken() {
    asking ??= Promise.resolve().then(() => {
      const given = window.prompt("This API needs its token (LOYALTY_API_TOKEN):");
      if (given && given.trim()) sessionStorage.setItem(TOKEN_KEY, given.trim());
      asking = null;
      return Boolean(given && given.trim());
    });
    return asking;
  }

  async function getJson(path, params, signal, retried = false) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(url, { headers, signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new Error(`GET ${path}: no answer from the API (${error.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON: the status line below says what went wrong.
    }
    if (response.status === 401 && !retried && (await askForToken())) {
      return getJson(path, params, signal, true);
    }
    if (!response.ok) {
      const why = body && typeof body.error === "string" ? body.error : response.statusText;
      throw new Error(`GET ${path} failed with ${response.status}: ${why}`);
    }
    if (body === null || typeof body !== "object") {
      throw new Error(`GET ${path} answered something other than a JSON object`);
    }
    return body;
  }

  function setError(card, message) {
    const line = card.querySelector(":scope > .error");
    line.textContent = message ?? "";
    line.hidden = !message;
    card.classList.toggle("failed", Boolean(message));
  }

  let generation = 0;
  let inFlight = null;

  function params(day) {
    return { as_of: `${day}T23:59:59Z`, months: "12", by: $("cohort-by").value };
  }

  async function load(day) {
    const mine = ++generation;
    inFlight?.abort();
    inFlight = new AbortController();
    const { signal } = inFlight;
    const p = params(day);
    segmentDay = day;
    document.body.dataset.state = "loading";
    $("status").textContent = `Loading the figures as of ${fmtDay(`${day}T00:00:00Z`)}…`;

    // Several cards read the same endpoint (churn): one request each per load.
    const requests = new Map();
    const read = ([path, extra, { optional = false } = {}]) => {
      const query = { as_of: p.as_of, ...extra };
      const key = `${path}?${new URLSearchParams(query)}`;
      if (!requests.has(key)) requests.set(key, getJson(path, query, signal));
      const body = requests.get(key);
      return optional ? body.catch(() => ({})) : body;
    };

    let failed = 0;
    await Promise.all(
      SECTIONS.map(async (section) => {
        const card = $(section.card);
        let bodies;
        try {
          bodies = await Promise.all(section.reads(p).map(read));
        } catch (error) {
          if (mine !== generation) return;
          failed += 1;
          section.clear();
          noData(card, false);
          setError(card, error.message);
          return;
        }
        if (mine !== generation) return; // a later date was picked meanwhile
        try {
          noData(card, !section.render(...bodies));
          setError(card, null);
        } catch (error) {
          failed += 1;
          console.error(`${section.card}:`, error);
          setError(card, `Could not draw this figure: ${error.message}`);
        }
      }),
    );
    if (mine !== generation) return;
    document.body.dataset.asOf = day;
    document.body.dataset.failed = String(failed);
    document.body.dataset.state = "ready";
    const at = `${fmtDay(`${day}T00:00:00Z`)}, 23:59:59 UTC`;
    $("status").textContent = failed
      ? `Figures as of ${at}. ${failed} of ${SECTIONS.length} could not be shown: see the cards marked in red.`
      : `Figures as of ${at}.`;
  }

  // ---- the as_of picker ----

  const todayUtc = () => new Date().toISOString().slice(0, 10);

  function pick(day, remember) {
    $("as-of").value = day;
    if (remember) {
      // The chosen day in the address, so that a link or a reload shows the same figures.
      const url = new URL(window.location.href);
      url.searchParams.set("as_of", day);
      window.history.replaceState(null, "", url);
    }
    return load(day);
  }

  function showPageError(message) {
    const line = $("page-error");
    line.textContent = message;
    line.hidden = false;
  }

  window.addEventListener("error", (event) => showPageError(`Error: ${event.message}`));
  window.addEventListener("unhandledrejection", (event) =>
    showPageError(`Error: ${event.reason?.message ?? event.reason}`),
  );

  function start() {
    if (typeof Chart === "undefined") {
      showPageError(
        "The chart library (/static/chart.umd.min.js) did not load: only tables and figures can be shown.",
      );
    } else {
      Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
      Chart.defaults.color = "#5b6478";
      Chart.defaults.maintainAspectRatio = false;
      Chart.defaults.animation.duration = 300;
    }
    const asked = new URL(window.location.href).searchParams.get("as_of");
    const input = $("as-of");
    input.addEventListener("change", () => {
      if (DAY.test(input.value)) pick(input.value, true);
      else $("status").textContent = "Pick a day to see the figures as of its end.";
    });
    $("today").addEventListener("click", () => pick(todayUtc(), true));
    $("cohort-by").addEventListener("change", () => load(input.value || todayUtc()));
    $("segment-pick").addEventListener("change", (event) =>
      segmentMembers(event.target.value, null),
    );
    // Enter in the date field would submit the form and reload the page.
    $("as-of-form").addEventListener("submit", (event) => event.preventDefault());
    pick(asked && DAY.test(asked) ? asked : todayUtc(), false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
