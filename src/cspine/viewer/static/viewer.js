// cspine viewer: the study list, uploads, and one study's CT with its C1-C7 labels, Grad-CAM,
// probabilities and attention. Plain JavaScript, no build step; NiiVue (window.niivue) draws the CT.
"use strict";
(() => {
  // C1..C7 overlay colours (label numbers 1..7 of cspine.labels); other labels (T1..) grey.
  const COLOURS = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240]];
  const NAMES = ["C1", "C2", "C3", "C4", "C5", "C6", "C7"];
  const LABEL_OPACITY = 0.45, HEAT_OPACITY = 0.6, HEAT_CAL = [64, 255];
  const $ = (id) => document.getElementById(id);
  let nv = null, study = null, selected = null, viewFiles = null;

  async function api(url, options) {
    const r = await fetch(url, options);
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }
  const fmt = (p) => (p === null || p === undefined ? "\u2014" : Number(p).toFixed(3));
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const frames = (n) => new Promise((r) => { const f = () => (--n <= 0 ? r() : requestAnimationFrame(f)); requestAnimationFrame(f); });
  // the draw calls are queued; reading one pixel back waits until the GPU has really drawn them
  const drawn = () => nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));

  async function waitJob(job, onUpdate) {
    while (job.state === "queued" || job.state === "running") {
      onUpdate(job);
      await sleep(700);
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.state === "failed") throw new Error(job.message);
    return job;
  }

  // --- the list -------------------------------------------------------------------------------
  async function showList() {
    $("study-page").hidden = true;
    $("list-page").hidden = false;
    const [info, studies] = await Promise.all([api("/api/info"), api("/api/studies")]);
    $("upload-box").hidden = !info.uploads;
    const body = $("studies").tBodies[0];
    body.replaceChildren();
    for (const s of studies) {
      const tr = el("tr", { "data-key": s.key });
      const a = el("a", { href: `#/study/${s.key}` }, s.study_uid);
      tr.append(el("td"), el("td", {}, s.origin), el("td", { class: "num" }, fmt(s.patient_overall)),
        el("td", {}, s.flagged.join(" ") || "none"), el("td", {}, s.view_ready ? "ready" : "on demand"));
      tr.cells[0].append(a);
      body.append(tr);
    }
    $("list-note").textContent = studies.length ? "" :
      info.uploads ? "No studies yet: upload one." : "No studies: start `cspine serve --results DIR`.";
  }

  async function upload(file) {
    const status = $("upload-status");
    status.className = "";
    try {
      status.textContent = `sending ${(file.size / 1048576).toFixed(1)} MiB`;
      const job = await api("/api/uploads", { method: "POST", body: file, headers: { "Content-Type": "application/zip" } });
      const done = await waitJob(job, (j) => { status.textContent = j.message; });
      location.hash = `#/study/${done.study_keys[0]}`;
    } catch (err) {
      status.className = "error";
      status.textContent = err.message;
    }
  }

  // --- a study --------------------------------------------------------------------------------
  async function showStudy(key) {
    $("list-page").hidden = true;
    $("study-page").hidden = false;
    document.body.dataset.render = "none";
    viewFiles = null;
    study = await api(`/api/studies/${key}`);
    $("study-title").textContent = study.study_uid;
    const call = $("patient-call");
    call.textContent = `patient p = ${fmt(study.patient.probability)}: ${study.patient.positive ? "fracture flagged" : "not flagged"}`;
    call.className = `call ${study.patient.positive ? "pos" : "neg"}`;
    renderTable();
    renderFacts();
    await renderView(key);
  }

  function renderTable() {
    const body = $("probs").tBodies[0];
    body.replaceChildren();
    for (const v of study.vertebrae) {
      const tr = el("tr", { "data-vertebra": v.name });
      const call = v.probability === null ? `not found${v.prior === null ? "" : ` (prior ${fmt(v.prior)})`}` :
        v.positive ? "flagged" : "-";
      tr.append(el("td", {}, v.name), el("td", { class: "num" }, fmt(v.probability)),
        el("td", { class: v.positive ? "pos" : "neg" }, call));
      tr.addEventListener("click", () => select(v.name, true));
      body.append(tr);
    }
    const op = study.operating_point;
    $("probs").tFoot.replaceChildren(el("tr"));
    $("probs").tFoot.rows[0].append(el("td", {}, "patient"),
      el("td", { class: "num" }, fmt(study.patient.probability)),
      el("td", { class: study.patient.positive ? "pos" : "neg" }, study.patient.positive ? "flagged" : "-"));
    $("op-point").textContent = `Operating point ${op.name}: vertebra p >= ${op.vertebra}, patient p >= ${op.patient}.` +
      (op.note ? ` ${op.note}.` : "") + (study.status_reason ? ` ${study.status_reason}.` : "");
    const flagged = study.vertebrae.filter((v) => v.positive && v.attention);
    const best = flagged[0] || study.vertebrae.filter((v) => v.attention).sort((a, b) => b.probability - a.probability)[0];
    select(best ? best.name : null, false);
  }

  function renderFacts() {
    const m = study.model, s = study.seconds;
    const rows = [["model", `${m.run || "?"} (seg ${m.seg_weights || "?"}, cls ${m.cls_weights || "?"})`],
      ["trained with", `cspine ${m.trained_with || "?"}`], ["predicted by", `cspine ${m.cspine || "?"}, torch ${m.torch || "?"} on ${m.device || "?"}`],
      ["seconds", ["decode", "seg", "crops", "cls", "explain", "total"].filter((k) => k in s).map((k) => `${k} ${Number(s[k]).toFixed(1)}`).join(", ")],
      ["volume", study.volume.shape ? `${study.volume.shape.join(" x ")} voxels, ${(study.volume.spacing_mm || []).join(" x ")} mm` : "?"]];
    $("facts").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("warnings").replaceChildren(...study.warnings.map((w) => el("li", {}, w)));
  }

  function select(name, move) {
    selected = study.vertebrae.find((v) => v.name === name) || null;
    for (const tr of $("probs").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.vertebra === name);
    renderAttention();
    if (move && selected && selected.centroid) moveTo(selected.centroid);
  }

  function renderAttention() {
    const svg = $("attention");
    svg.replaceChildren();
    $("att-name").textContent = selected ? selected.name : "";
    const att = selected && selected.attention;
    if (!att || !att.weights.length) {
      $("att-note").textContent = "No attention: the vertebra was not found by stage 1.";
      return;
    }
    const w = att.weights, n = w.length, top = Math.max(...w), bw = 300 / n;
    const ns = "http://www.w3.org/2000/svg";
    w.forEach((x, i) => {
      const r = document.createElementNS(ns, "rect"), h = (x / top) * 84;
      Object.entries({ x: i * bw + 0.5, y: 90 - h, width: Math.max(bw - 1, 0.5), height: h }).forEach(([k, v]) => r.setAttribute(k, v));
      if (x === top) r.setAttribute("class", "top");
      const t = document.createElementNS(ns, "title");
      t.textContent = `slice ${att.slice_indices[i]}: ${x.toFixed(3)}`;
      r.append(t);
      r.addEventListener("click", () => selected.centroid && moveTo([att.slice_indices[i], selected.centroid[1], selected.centroid[2]]));
      svg.append(r);
    });
    const u = document.createElementNS(ns, "line"), y = 90 - (1 / n / top) * 84;
    Object.entries({ x1: 0, x2: 300, y1: y, y2: y }).forEach(([k, v]) => u.setAttribute(k, v));
    svg.append(u);
    $("att-note").textContent = `${n} crop slices, volume slices ${att.slice_indices[0]}-${att.slice_indices[n - 1]} ` +
      "(cranial to caudal); dashed: uniform attention. Click a bar to go to its slice.";
  }

  // a canonical (z, y, x) voxel -> RAS mm through the view files' affine (their i, j, k = x, y, z)
  function moveTo(zyx) {
    const a = viewFiles && viewFiles.affine_ras;
    if (!nv || !nv.volumes.length || !a) return;
    const ijk = [zyx[2], zyx[1], zyx[0], 1];
    const mm = [0, 1, 2].map((r) => a[r].reduce((sum, x, c) => sum + x * ijk[c], 0));
    nv.scene.crosshairPos = nv.mm2frac(mm);
    nv.drawScene();
  }

  function labelColormap() {
    const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
    for (let i = 1; i <= 19; i++) {
      const c = COLOURS[i - 1] || [160, 160, 160];
      cm.R.push(c[0]); cm.G.push(c[1]); cm.B.push(c[2]); cm.A.push(255); cm.I.push(i);
      cm.labels.push(NAMES[i - 1] || `T${i - 7}`);
    }
    return cm;
  }

  async function renderView(key) {
    const note = $("view-note");
    note.className = "note";
    let view = study.view;
    if (view.status === "absent" || view.status === "building") {
      try {
        const job = view.status === "absent" ? await api(`/api/studies/${key}/view`, { method: "POST" }) : null;
        if (job) await waitJob(job, (j) => { note.textContent = `Making the view files: ${j.message}`; });
        while (view.status !== "ready") {
          note.textContent = "Making the view files...";
          await sleep(700);
          view = (await api(`/api/studies/${key}`)).view;
          if (view.status === "unavailable" || view.status === "absent") throw new Error(view.note);
        }
      } catch (err) {
        note.className = "note error";
        note.textContent = err.message;
        return;
      }
    }
    if (view.status !== "ready") {
      $("gl").parentElement.hidden = true;
      note.textContent = view.note;
      return;
    }
    $("gl").parentElement.hidden = false;
    note.textContent = "Loading the CT...";
    await drawVolumes(view.files);
    note.textContent = view.files.heat ? `Grad-CAM of ${view.files.heat_vertebrae.join(", ")} (most attended slices).` :
      "No vertebra flagged: no Grad-CAM.";
  }

  async function drawVolumes(files) {
    if (!nv) {
      nv = new niivue.Niivue({
        // radiological display: patient right on screen left, sagittal nose left
        backColor: [0, 0, 0, 1], show3Dcrosshair: false, isRadiologicalConvention: true, sagittalNoseLeft: true,
        isColorbar: false,
        multiplanarShowRender: niivue.SHOW_RENDER.NEVER, crosshairColor: [0.3, 0.75, 1, 0.8], crosshairWidth: 1,
        dragAndDropEnabled: false, logLevel: "error",
      });
      await nv.attachToCanvas($("gl"));
      nv.setDrawColormap(labelColormap()); // recomputes every layer: cheap only while none is loaded
    }
    viewFiles = files;
    const w = files.window_hu || [-500, 1300];
    // the CT first: it is what the reader needs to see; the overlays follow
    await nv.loadVolumes([{ url: files.ct, name: "ct.nii.gz", colormap: "gray", cal_min: w[0], cal_max: w[1] }]);
    performance.mark("cspine-ct-loaded"); // fetched, decompressed, uploaded; not necessarily drawn yet
    nv.setSliceType(nv.sliceTypeMultiplanar);
    const c = selected && selected.centroid;
    if (c) moveTo(c); else nv.drawScene();
    drawn();
    await frames(2);
    performance.mark("cspine-ct-rendered");
    document.body.dataset.render = "ct";
    // Every addVolume / setOpacity recomputes all volume layers (minutes for a 512x512x300 CT in a software
    // renderer). The label map is therefore NiiVue's drawing layer (a texture coloured when drawn; its
    // opacity costs one redraw), and the heat map, the one overlay volume, gets its opacity before it is added.
    const [labels, heat] = await Promise.all([
      niivue.NVImage.loadFromUrl({ url: files.labels, name: "labels.nii.gz" }),
      files.heat ? niivue.NVImage.loadFromUrl({ url: files.heat, name: "heat.nii.gz", colormap: "warm",
        cal_min: HEAT_CAL[0], cal_max: HEAT_CAL[1] }) : null]);
    nv.loadDrawing(labels);
    nv.setDrawOpacity($("show-labels").checked ? LABEL_OPACITY : 0);
    if (heat) {
      heat.opacity = $("show-heat").checked ? HEAT_OPACITY : 0;
      nv.addVolume(heat);
    }
    $("legend").replaceChildren(...NAMES.map((n, i) => {
      const s = el("span", {}, n);
      s.style.background = `rgb(${COLOURS[i].join(",")})`;
      return s;
    }));
    nv.drawScene();
    drawn();
    await frames(2);
    performance.mark("cspine-overlays-rendered");
    document.body.dataset.render = "overlays";
  }

  function toggleLabels() {
    if (nv) nv.setDrawOpacity($("show-labels").checked ? LABEL_OPACITY : 0);
  }

  function toggleHeat() { // the heat map is volume layer 1, over the CT
    if (nv && nv.volumes[1]) nv.setOpacity(1, $("show-heat").checked ? HEAT_OPACITY : 0);
  }

  // --- wiring ---------------------------------------------------------------------------------
  function route() {
    const m = location.hash.match(/^#\/study\/([0-9a-f]+)$/);
    const run = m ? showStudy(m[1]) : showList();
    run.catch((err) => {
      const where = m ? $("view-note") : $("list-note");
      where.className = "note error";
      where.textContent = err.message;
    });
  }

  async function showModel() {
    const info = await api("/api/info");
    $("model-info").textContent = info.model ? `model ${info.model.run} (cls ${info.model.cls_weights})` :
      "no model: results only";
  }

  window.addEventListener("hashchange", route);
  $("upload").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  $("show-labels").addEventListener("change", toggleLabels);
  $("show-heat").addEventListener("change", toggleHeat);
  showModel().catch(() => {});
  route();
})();
