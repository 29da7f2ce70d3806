// jobd dashboard: local times, live updates from /ui/events, actions without a reload.
// Every page works without this file; it only makes them nicer.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const main = document.getElementById("main");
  // How often a page may read itself again when events keep coming (milliseconds).
  const THROTTLE = { overview: 2000, jobs: 1000, job: 300, schedules: 2000 };

  function localTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment)) {
        el.textContent = moment.toLocaleString();
      }
    }
  }

  function selection() {
    return new Set(Array.from(main.querySelectorAll('input[name="id"]:checked'), (b) => b.value));
  }

  function restoreSelection(ids) {
    for (const box of main.querySelectorAll('input[name="id"]')) {
      box.checked = ids.has(box.value);
    }
    countSelected();
  }

  function countSelected() {
    const out = document.getElementById("selected-count");
    if (out) {
      const n = main.querySelectorAll('input[name="id"]:checked').length;
      out.textContent = n ? n + " selected" : "";
    }
  }

  let refreshing = false;
  let again = false;
  let last = 0;
  let timer = null;

  function editing() {
    const el = document.activeElement;
    return el && main.contains(el) && (el.matches("input:not([type=checkbox]), select, textarea"));
  }

  async function refresh() {
    if (refreshing) { again = true; return; }
    if (editing()) { again = true; return; }
    refreshing = true;
    last = Date.now();
    try {
      const answer = await fetch(location.href, {
        headers: { "X-Jobd-Fragment": "main" },
        credentials: "same-origin",
      });
      if (answer.ok) {
        const keep = selection();
        const template = document.createElement("template");
        template.innerHTML = await answer.text();
        main.replaceChildren(template.content);
        localTimes(main);
        restoreSelection(keep);
        body.dataset.refreshed = String(Date.now());
      } else if (answer.status === 401) {
        location.reload();  // the session ended: the server sends the sign-in page
      }
    } catch (e) {
      // The shim is unreachable: the event stream will say so and reconnect.
    } finally {
      refreshing = false;
      if (again) { again = false; soon(); }
    }
  }

  function soon() {
    if (timer) return;
    const wait = Math.max(0, (THROTTLE[page] || 1000) - (Date.now() - last));
    timer = setTimeout(() => { timer = null; refresh(); }, wait);
  }

  main.addEventListener("focusout", () => { if (again && !refreshing) { again = false; soon(); } });

  function listen() {
    if (!("EventSource" in window) || !(page in THROTTLE)) return;
    const live = document.getElementById("live");
    const source = new EventSource("/ui/events");
    source.addEventListener("open", () => { if (live) live.hidden = false; });
    source.addEventListener("error", () => { if (live) live.hidden = true; });
    source.addEventListener("reset", soon);
    source.addEventListener("job", (event) => {
      if (page === "job") {
        const change = JSON.parse(event.data);
        if (String(change.id) !== body.dataset.jobId) return;
      }
      soon();
    });
  }

  async function act(form, submitter) {
    const data = new FormData(form, submitter);
    const status = ensureStatus();
    status.textContent = "Working…";
    try {
      const answer = await fetch(form.getAttribute("action"), {
        method: "POST",
        body: new URLSearchParams(data),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const reply = await answer.json().catch(() => ({}));
      status.textContent = answer.ok ? reply.message : (reply.detail || "Refused (" + answer.status + ")");
      status.className = answer.ok ? "notice" : "error";
    } catch (e) {
      status.textContent = "The server cannot be reached.";
      status.className = "error";
    }
    refresh();
  }

  function ensureStatus() {
    let status = document.getElementById("action-status");
    if (!status) {
      status = document.createElement("p");
      status.id = "action-status";
      status.setAttribute("role", "status");
      main.parentNode.insertBefore(status, main);
    }
    return status;
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches("[data-action-form]")) {
      event.preventDefault();
      act(form, event.submitter);
    }
  });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box.id === "select-all") {
      for (const b of main.querySelectorAll('input[name="id"]')) b.checked = box.checked;
    }
    if (box.matches('input[type="checkbox"]')) countSelected();
  });

  localTimes(document);
  listen();
})();
