// Reading a QR code: the browser's BarcodeDetector where it has one for QR, else jsQR.
import jsQR from "jsqr";

let detector;
async function nativeDetector() {
  if (detector !== undefined) return detector;
  detector = null;
  if ("BarcodeDetector" in globalThis) {
    try {
      const formats = await globalThis.BarcodeDetector.getSupportedFormats();
      if (formats.includes("qr_code")) detector = new globalThis.BarcodeDetector({ formats: ["qr_code"] });
    } catch {
      detector = null;
    }
  }
  return detector;
}

function decodeCanvas(canvas, inversion) {
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const code = jsQR(img.data, img.width, img.height, { inversionAttempts: inversion });
  return code ? code.data : null;
}

function draw(source, width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d", { willReadFrequently: true }).drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas;
}

/** The text of the QR code in an image file (a photo of the label), or null. */
export async function decodeFile(file) {
  const bitmap = await createImageBitmap(file);
  try {
    const native = await nativeDetector();
    if (native) {
      const found = await native.detect(bitmap);
      if (found.length) return found[0].rawValue;
    }
    // Small first (fast, and phone photos are large), then larger for a distant label.
    for (const side of [1000, 2000]) {
      const text = decodeCanvas(draw(bitmap, bitmap.width, bitmap.height, side), "attemptBoth");
      if (text) return text;
    }
    return null;
  } finally {
    bitmap.close();
  }
}

/** Scan the camera's video until a QR code is found or stop() is called. */
export function scanVideo(video, onFound) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (video.readyState >= 2 && video.videoWidth) {
      const native = await nativeDetector();
      let text = null;
      if (native) {
        const found = await native.detect(video).catch(() => []);
        text = found.length ? found[0].rawValue : null;
      } else {
        text = decodeCanvas(draw(video, video.videoWidth, video.videoHeight, 800), "dontInvert");
      }
      if (text && !stopped) {
        stopped = true;
        onFound(text);
        return;
      }
    }
    setTimeout(tick, 150);
  };
  tick();
  return () => {
    stopped = true;
  };
}
