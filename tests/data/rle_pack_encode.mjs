// Encodes RGBA arrays with @thi.ng/rle-pack, the encoder Label Studio's editor uses for brush
// masks, to make tests/data/label_studio_rle_pack.json (the reference for segformat's decoder):
//   cd DIR && npm install @thi.ng/rle-pack@3 && cp rle_pack_encode.mjs DIR && node DIR/rle_pack_encode.mjs < cases.json
// stdin: [{"name", "height", "width", "rgba": [flat RGBA bytes]}]; stdout: the same with "rle".
import { encode } from "@thi.ng/rle-pack";
import { readFileSync } from "node:fs";

const cases = JSON.parse(readFileSync(0, "utf8"));
for (const c of cases) {
  c.rle = Array.from(encode(Uint8Array.from(c.rgba), c.rgba.length, 8, [3, 4, 8, 16]));
}
process.stdout.write(JSON.stringify(cases));
