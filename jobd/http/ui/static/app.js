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

  // --- every job the filters match: count, ask in a dialog, then step after step --------

  async function postJson(url, data) {
    const answer = await fetch(url, {
      method: data ? "POST" : "GET",
      body: data,
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const reply = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(reply.detail || "Refused (" + answer.status + ")");
    return reply;
  }

  function say(status, text, kind) {
    status.textContent = text;
    status.className = kind;
  }

  function ask(question, verb) {
    let dialog = document.getElementById("confirm-dialog");
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.id = "confirm-dialog";
      dialog.className = "confirm";
      const text = document.createElement("p");
      const form = document.createElement("form");
      form.method = "dialog";
      const no = document.createElement("button");
      no.value = "cancel";
      no.className = "secondary";
      no.textContent = "Back";
      const yes = document.createElement("button");
      yes.value = "confirm";
      yes.id = "confirm-yes";
      form.append(no, yes);
      dialog.append(text, form);
      body.append(dialog);
    }
    dialog.querySelector("p").textContent = question;
    dialog.querySelector("#confirm-yes").textContent = verb;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    });
  }

  async function matching(form, submitter) {
    const status = ensureStatus();
    say(status, "Counting…", "");
    let found;
    try {
      found = await postJson("/ui/jobs/matching?" + new URLSearchParams(new FormData(form, submitter)));
    } catch (e) {
      say(status, e.message === "Failed to fetch" ? "The server cannot be reached." : e.message, "error");
      return;
    }
    if (found.matched === 0) { say(status, "No job matches: there is nothing to do.", "notice"); return; }
    say(status, "", "");
    if (!(await ask(found.question, found.verb + " " + found.matched))) return;
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    let step = { changed: 0, busy: 0, next_cursor: null };
    body.dataset.matching = "running";
    try {
      do {
        const data = new URLSearchParams(found.fields);
        data.set("csrf", csrf);
        data.set("action", found.action);
        data.set("changed", step.changed);
        data.set("busy", step.busy);
        if (step.next_cursor) data.set("cursor", step.next_cursor);
        step = await postJson("/ui/jobs/matching", data);
        say(status, step.message + (step.next_cursor ? " …" : "."), "notice");
      } while (step.next_cursor);
    } catch (e) {
      say(status, "Stopped: " + e.message + " (" + step.changed + " done before)", "error");
    }
    body.dataset.matching = "done";
    refresh();
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches("[data-action-form]")) {
      event.preventDefault();
      act(form, event.submitter);
    } else if (form.matches("[data-matching-form]")) {
      event.preventDefault();
      matching(form, event.submitter);
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
