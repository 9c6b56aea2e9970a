// Small real files for the scripts that show a vault to a file manager: PNG images written
// from Node (zlib), JPEGs converted from them by ImageMagick, and a one-page PDF.
import { deflateSync } from 'node:zlib';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/**
 * An 8-bit RGB PNG. `pixels` is a function (x, y) => [r, g, b] or a Buffer of width × height
 * RGB triples, row by row. `level` is zlib's compression level (0 stores the pixels as they
 * are: quick for noise, which does not compress anyway).
 */
export function png(width, height, pixels, { level = 6 } = {}) {
  const stride = 1 + width * 3;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    raw[y * stride] = 0; // filter: none
    if (Buffer.isBuffer(pixels)) {
      pixels.copy(raw, y * stride + 1, y * width * 3, (y + 1) * width * 3);
      continue;
    }
    for (let x = 0; x < width; x++) {
      const [r, g, b] = pixels(x, y);
      const o = y * stride + 1 + x * 3;
      raw[o] = r;
      raw[o + 1] = g;
      raw[o + 2] = b;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(raw, { level })),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * A picture that is mostly one flat `color` (so it can be recognised in a thumbnail on a
 * screenshot), with a white diagonal band and a dark frame so it is not a plain swatch.
 */
export function signatureImage(width, height, color) {
  const band = Math.max(4, Math.round(Math.min(width, height) / 12));
  return png(width, height, (x, y) => {
    if (x < 3 || y < 3 || x >= width - 3 || y >= height - 3) return [40, 40, 40];
    const d = x - (y * width) / height;
    if (Math.abs(d) < band) return [255, 255, 255];
    return color;
  });
}

/** A one-page PDF showing `lines` of text in Helvetica. */
export function pdf(lines) {
  const text = lines.map((l, i) => `BT /F1 18 Tf 72 ${720 - i * 28} Td (${l.replace(/[()\\]/g, (c) => `\\${c}`)}) Tj ET`).join('\n');
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${Buffer.byteLength(text, 'latin1')} >>\nstream\n${text}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  let body = '%PDF-1.4\n';
  const offsets = [];
  objects.forEach((o, i) => {
    offsets.push(Buffer.byteLength(body, 'latin1'));
    body += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = Buffer.byteLength(body, 'latin1');
  body += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) body += `${String(off).padStart(10, '0')} 00000 n \n`;
  body += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(body, 'latin1');
}
