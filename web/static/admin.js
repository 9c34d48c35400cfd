// Progressive enhancement for /admin: a "changed — reload" notice from the live events
// stream. Without JavaScript every page still works.
(function () {
  "use strict";
  const issue = document.querySelector("[data-issue]");
  const list = document.querySelector("[data-live=list]");
  if (!window.EventSource || (!issue && !list)) return;
  const shown = new Set(Array.from(document.querySelectorAll("tr[data-id]"), (tr) => tr.dataset.id));
  const source = new EventSource("/admin/events");
  source.onopen = function () { document.documentElement.dataset.live = "open"; };
  function notice(text) {
    let box = document.querySelector(".live");
    if (!box) {
      box = document.createElement("p");
      box.className = "live";
      box.setAttribute("role", "status");
      box.append(document.createElement("span"), " ");
      const link = document.createElement("a");
      link.href = location.pathname + location.search;
      link.textContent = "Reload";
      box.append(link);
      document.querySelector("main").prepend(box);
    }
    box.querySelector("span").textContent = text;
    box.hidden = false;
  }
  function onEvent(message) {
    let event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    const id = String(event.issue_id);
    if (issue && id === issue.dataset.issue && event.seq > Number(issue.dataset.seq)) {
      notice("This issue changed since you opened it.");
    } else if (list && (shown.has(id) || event.type === "issue.created")) {
      notice("Issues on this page changed.");
    }
  }
  // The stream names each event by its type (SSE "event:"), so listen for each.
  ["issue.created", "issue.updated", "issue.deleted", "comment.added",
   "nim_action.recorded", "attachment.added", "issue.imported"].forEach(function (type) {
    source.addEventListener(type, onEvent);
  });
})();

// The board: drag a card onto a column it may move to; the drop submits the card's own
// move form (the same request as without JavaScript).
(function () {
  "use strict";
  const board = document.querySelector(".board");
  if (!board) return;
  let dragged = null;
  board.addEventListener("dragstart", function (e) {
    dragged = e.target.closest(".card-item");
    if (dragged) e.dataTransfer.setData("text/plain", dragged.dataset.id);
  });
  board.addEventListener("dragend", function () {
    dragged = null;
    board.querySelectorAll(".drop-ok").forEach((c) => c.classList.remove("drop-ok"));
  });
  function allowed(column) {
    return dragged && column && dragged.dataset.moves.split(" ").includes(column.dataset.status);
  }
  board.addEventListener("dragover", function (e) {
    const column = e.target.closest(".column");
    if (allowed(column)) {
      e.preventDefault();
      column.classList.add("drop-ok");
    }
  });
  board.addEventListener("dragleave", function (e) {
    const column = e.target.closest(".column");
    if (column && !column.contains(e.relatedTarget)) column.classList.remove("drop-ok");
  });
  board.addEventListener("drop", function (e) {
    const column = e.target.closest(".column");
    if (!allowed(column)) return;
    e.preventDefault();
    const form = dragged.querySelector("form.move");
    form.querySelector("select").value = column.dataset.status;
    form.submit();
  });
})();
