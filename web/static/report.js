// Progressive enhancement for the report form: drag-and-drop and size hints, custom
// fields as rows of name and value, and one send per report (the button is disabled
// and shows progress; it comes back after a network error so the reporter can retry).
// The form works the same without this file: the server keeps the one-time token's
// first result, and the JSON box stays for custom fields.
(function () {
  "use strict";

  function size(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MB";
    if (n >= 1024) return Math.round(n / 1024) + " KB";
    return n + " bytes";
  }

  // The server's forgiving reading of the JSON box: curly double quotes and a trailing
  // comma are fine.
  function forgiving(text) {
    text = text.replace(/[\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb]/g, '"');
    var out = "", inString = false, escaped = false;
    for (var i = 0; i < text.length; i++) {
      var ch = text[i];
      if (inString) {
        escaped = !escaped && ch === "\\";
        if (ch === '"' && !escaped) inString = false;
        out += ch;
        continue;
      }
      if (ch === '"') inString = true;
      if (ch === "," && /^\s*[}\]]/.test(text.slice(i + 1))) continue;
      out += ch;
    }
    return out;
  }

  function setupFiles(form) {
    var input = document.getElementById("attachments");
    var drop = document.getElementById("drop");
    var list = document.getElementById("file-list");
    var maxFile = Number(form.dataset.maxFile), maxFiles = Number(form.dataset.maxFiles);
    var maxTotal = Number(form.dataset.maxTotal);

    function show() {
      list.textContent = "";
      var total = 0;
      Array.prototype.forEach.call(input.files, function (file, i) {
        total += file.size;
        var li = document.createElement("li");
        li.setAttribute("dir", "auto");
        li.textContent = file.name + " (" + size(file.size) + ")";
        if (file.size > maxFile || i >= maxFiles) {
          li.className = "too-big";
          li.textContent += file.size > maxFile ? " is too large" : " is one file too many";
        }
        list.appendChild(li);
      });
      if (total > maxTotal) {
        var li = document.createElement("li");
        li.className = "too-big";
        li.textContent = "Together the files are larger than " + size(maxTotal) + ".";
        list.appendChild(li);
      }
    }

    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (event) {
        event.preventDefault();
        drop.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("dragging"); });
    });
    drop.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show();
      }
    });
  }

  // -- custom fields as rows -------------------------------------------------------
  function setupRows(form) {
    var box = document.getElementById("custom_fields");
    var rows = document.getElementById("cf-rows");
    var json = document.getElementById("cf-json");
    var problem = document.getElementById("cf-problem");
    if (!box || !rows) return null;

    var start = {};
    if (box.value.trim()) {
      try {
        start = JSON.parse(forgiving(box.value));
      } catch (e) {
        return null; // not readable as rows: the JSON box stays, the server explains
      }
      if (!start || typeof start !== "object" || Array.isArray(start)) return null;
      for (var k in start) {
        var v = start[k];
        if (v !== null && typeof v === "object") return null; // nested: keep the JSON box
      }
    }
    var list = document.createElement("div");
    list.className = "cf-list";
    rows.appendChild(list);
    var add = document.createElement("button");
    add.type = "button";
    add.className = "secondary";
    add.id = "cf-add";
    add.textContent = "Add field";
    rows.appendChild(add);
    var count = 0;

    function addRow(name, value) {
      count += 1;
      var row = document.createElement("div");
      row.className = "cf-row";
      var key = document.createElement("input");
      key.className = "cf-key";
      key.setAttribute("aria-label", "Field name");
      key.placeholder = "name, e.g. device";
      key.setAttribute("dir", "auto");
      key.maxLength = 100;
      key.value = name;
      var val = document.createElement("input");
      val.className = "cf-value";
      val.setAttribute("aria-label", "Value");
      val.placeholder = "value, e.g. Quest 3";
      val.setAttribute("dir", "auto");
      val.value = value;
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary cf-remove";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove this field");
      remove.addEventListener("click", function () {
        row.remove();
        sync();
      });
      key.addEventListener("input", sync);
      val.addEventListener("input", sync);
      row.appendChild(key);
      row.appendChild(val);
      row.appendChild(remove);
      list.appendChild(row);
      return key;
    }

    // Rows into the JSON box (the field the server reads); a problem names the row.
    function sync() {
      var out = {}, seen = {}, message = "";
      Array.prototype.forEach.call(list.querySelectorAll(".cf-row"), function (row, i) {
        var name = row.querySelector(".cf-key").value.trim();
        var value = row.querySelector(".cf-value").value;
        if (!name && !value) return;
        if (!name && !message) message = "Row " + (i + 1) + ": please give the field a name.";
        else if (seen[name] && !message) message = "Row " + (i + 1) + ": “" + name + "” is used twice.";
        if (name) {
          seen[name] = true;
          out[name] = value;
        }
      });
      box.value = Object.keys(out).length ? JSON.stringify(out) : "";
      problem.textContent = message;
      problem.hidden = !message;
      return message;
    }

    Object.keys(start).forEach(function (name) {
      var v = start[name];
      addRow(name, typeof v === "string" ? v : JSON.stringify(v));
    });
    if (!count) addRow("", "");
    add.addEventListener("click", function () { addRow("", "").focus(); });

    // "Edit as JSON": the box the server reads, for nested values or pasting.
    var asJson = document.createElement("button");
    asJson.type = "button";
    asJson.className = "secondary";
    asJson.id = "cf-as-json";
    asJson.textContent = "Edit as JSON";
    rows.appendChild(asJson);
    var rowsMode = true;
    asJson.addEventListener("click", function () {
      sync();
      rowsMode = false;
      rows.hidden = true;
      json.hidden = false;
      problem.hidden = true;
      box.focus();
    });
    json.hidden = true;
    rows.hidden = false;
    return function () { return rowsMode ? sync() : ""; };
  }

  // -- one send per report ----------------------------------------------------------
  // The post itself is the browser's own (it works the same without this script); the
  // server answers every post of the form's token with the first result, so this only
  // keeps a second tap from sending the files again, and tells the reporter it is busy.
  function setupSend(form, sync) {
    var button = document.getElementById("send");
    var label = button.textContent;
    var sending = false;

    function ready() {
      sending = false;
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = label;
    }

    form.addEventListener("submit", function (event) {
      if (sending) {
        event.preventDefault();
        return;
      }
      if (sync && sync()) {
        event.preventDefault(); // a row without a name: the message says which
        document.getElementById("cf-problem").scrollIntoView({ block: "center" });
        return;
      }
      sending = true;
      // Disabled after the browser has taken the form's data (a disabled button's
      // click would not submit); the text shows it is on its way.
      window.setTimeout(function () {
        if (!sending) return;
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
        var input = document.getElementById("attachments");
        var bytes = 0;
        Array.prototype.forEach.call(input.files || [], function (f) { bytes += f.size; });
        button.textContent = bytes ? "Sending… (" + size(bytes) + ")" : "Sending…";
      }, 0);
    });
    // Back after a network error (the page comes from the back/forward cache): ready to
    // try again, with everything still filled in.
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) ready();
    });
    window.addEventListener("offline", ready);
  }

  function init() {
    var form = document.querySelector("form[data-max-file]");
    if (!form) return;
    setupFiles(form);
    var sync = setupRows(form);
    setupSend(form, sync);
  }

  init();
})();
