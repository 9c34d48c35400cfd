// Progressive enhancement for the report form: drag-and-drop and size hints.
// The form works the same without this file.
(function () {
  "use strict";
  var form = document.querySelector("form[data-max-file]");
  if (!form) return;
  var input = document.getElementById("attachments");
  var drop = document.getElementById("drop");
  var list = document.getElementById("file-list");
  var maxFile = Number(form.dataset.maxFile), maxFiles = Number(form.dataset.maxFiles);
  var maxTotal = Number(form.dataset.maxTotal);

  function size(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MB";
    if (n >= 1024) return Math.round(n / 1024) + " KB";
    return n + " bytes";
  }

  function show() {
    list.textContent = "";
    var total = 0;
    Array.prototype.forEach.call(input.files, function (file, i) {
      total += file.size;
      var li = document.createElement("li");
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
})();
