// The agreement's signing form: an optional hand-drawn signature beside the typed name.
// Pointer strokes on the canvas (300 × 100 units, whatever its size on screen) become an SVG
// path, "M x y L x y …" in whole units, written into the form's hidden "drawn" field; the
// server checks the path and prints it on the signed copy. Without JavaScript the field stays
// empty and the typed name alone signs.
const W = 300;
const H = 100;

for (const pad of document.querySelectorAll("[data-signature-pad]")) {
  const canvas = pad.querySelector("canvas");
  const field = pad.querySelector("input[name=drawn]");
  const clear = pad.querySelector("[data-clear]");
  const ctx = canvas.getContext("2d");
  ctx.lineWidth = 2;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  let path = [];
  let drawing = false;
  pad.hidden = false;

  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    const x = Math.round(((event.clientX - box.left) * W) / box.width);
    const y = Math.round(((event.clientY - box.top) * H) / box.height);
    return [Math.min(W, Math.max(0, x)), Math.min(H, Math.max(0, y))];
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    drawing = true;
    try {
      canvas.setPointerCapture(event.pointerId);
    } catch {
      // A pointer the browser does not know (a synthetic event): draw without capture.
    }
    const [x, y] = point(event);
    path.push(`M${x} ${y}`);
    ctx.beginPath();
    ctx.moveTo(x, y);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    path.push(`L${x} ${y}`);
    ctx.lineTo(x, y);
    ctx.stroke();
  });
  const end = () => {
    drawing = false;
    field.value = path.join(" ");
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  clear.addEventListener("click", () => {
    path = [];
    field.value = "";
    ctx.clearRect(0, 0, W, H);
  });
}
