// firmcast console: the publish page's upload and publish (everything else
// is plain forms and htmx). Loaded as a file: the CSP allows no inline script.
"use strict";
// Counts Content-Security-Policy violations on the page (the browser tests
// read it: nothing the console does at run time may need an exception).
document.addEventListener("securitypolicyviolation", function () {
  const d = document.documentElement.dataset;
  d.cspViolations = String(Number(d.cspViolations || "0") + 1);
});
(function () {
  const form = document.getElementById("publish");
  if (!form) return;
  const csrf = form.dataset.csrf;
  const releaseInput = document.getElementById("release-file");
  const firmwareInput = document.getElementById("firmware-file");
  const summary = document.getElementById("release-summary");
  const bar = document.getElementById("upload-progress");
  const barText = document.getElementById("upload-text");
  const verdict = document.getElementById("verdict");
  const lines = document.getElementById("verdict-lines");
  const link = document.getElementById("verdict-link");
  const button = document.getElementById("publish-button");
  let release = null; // { envelope, manifest }

  function say(what, verdictWord, text) {
    const li = document.createElement("li");
    li.className = "verdict-" + verdictWord.replace(" ", "-");
    const strong = document.createElement("strong");
    strong.textContent = what + ": ";
    li.appendChild(strong);
    li.appendChild(document.createTextNode(text));
    lines.appendChild(li);
  }

  function showVerdict(answer) {
    verdict.hidden = false;
    lines.textContent = "";
    link.textContent = "";
    for (const l of answer.lines || []) say(l.what, l.verdict, l.text);
    if (!answer.lines) say("Server", "refused", answer.message || "the request was refused");
    if (answer.href) {
      const a = document.createElement("a");
      a.href = answer.href;
      a.textContent = "Open the release";
      link.appendChild(a);
    }
  }

  function decodePayload(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  releaseInput.addEventListener("change", async function () {
    release = null;
    summary.textContent = "";
    const file = releaseInput.files[0];
    if (!file) return;
    try {
      const envelope = JSON.parse(await file.text());
      const manifest = decodePayload(envelope.payload);
      release = { envelope: envelope, manifest: manifest };
      summary.textContent = manifest.product + " " + manifest.version + " (seq " + manifest.seq +
        ", " + manifest.channel + "), firmware of " + manifest.artifact.size + " bytes, " +
        envelope.signatures.length + " signature(s)";
    } catch (e) {
      summary.textContent = "This is not a signed release file (" + e.message + "); choose the file `firmcast release sign` wrote.";
    }
  });

  function upload(manifest, file) {
    return new Promise(function (resolve) {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", "/console/upload/" + encodeURIComponent(manifest.product) + "/" + encodeURIComponent(manifest.version));
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        const pct = Math.floor((e.loaded / e.total) * 100);
        bar.value = pct;
        bar.textContent = pct + "%";
        barText.textContent = pct + "% of " + e.total + " bytes";
      });
      xhr.addEventListener("load", function () {
        let answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = { message: xhr.statusText }; }
        resolve({ status: xhr.status, answer: answer });
      });
      xhr.addEventListener("error", function () {
        resolve({ status: 0, answer: { message: "the connection broke; upload again" } });
      });
      xhr.send(file);
    });
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const firmware = firmwareInput.files[0];
    if (!release || !firmware) {
      summary.textContent = "Choose a signed release file and its firmware first.";
      return;
    }
    button.disabled = true;
    verdict.hidden = true;
    bar.value = 0;
    barText.textContent = "uploading";
    try {
      const up = await upload(release.manifest, firmware);
      if (up.status !== 201) {
        barText.textContent = "upload refused";
        showVerdict({ lines: [{ what: "Upload", verdict: "refused", text: up.answer.message || ("status " + up.status) }] });
        return;
      }
      bar.value = 100;
      barText.textContent = "uploaded: sha256 " + up.answer.sha256 + ", " + up.answer.size + " bytes";
      const resp = await fetch("/console/publish", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({
          release: release.envelope,
          rollout: Number(document.getElementById("publish-rollout").value),
          paused: document.getElementById("publish-paused").checked,
        }),
      });
      let answer = {};
      try { answer = await resp.json(); } catch (e) { answer = { message: resp.statusText }; }
      showVerdict(answer);
    } finally {
      button.disabled = false;
    }
  });
})();
