// The vswitch's classifier and exact-match cache, against the SDN issue's
// targets: cache hits at least 5M lookups/s on one core; wildcard lookups at
// 10k rules over at least 5 masks at least 500k/s. Baseline in the same run:
// a plain Map lookup with the same string keys. Usage: node bench/vswitch.mjs
import { parsePacket, toWords, Vswitch } from "../packages/vswitch/dist/mod.js";

function rate(label, n, fn) {
  for (let i = 0; i < Math.min(n, 20_000); i++) fn(i);
  const runs = [];
  for (let r = 0; r < 3; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    runs.push(n / (Number(process.hrtime.bigint() - start) / 1e9));
  }
  runs.sort((a, b) => a - b);
  console.log(`${label}: ${Math.round(runs[1]).toLocaleString("en")}/s (median of 3)`);
  return runs[1];
}

const vs = new Vswitch({ ports: [1, 2, 3, 4], now: () => 0 });
// Rules over 5 masks (/32, /24 and /16 destinations, exact ports, MAC
// destinations); same match and priority replace each other, so fewer than 10,000 stay.
for (let i = 0; i < 2_000; i++) {
  const a = (i >> 8) & 255, b = i & 255;
  vs.addFlow(`priority=${100 + (i % 50)},ip,nw_dst=10.${a}.${b}.1,actions=output:1`);
  vs.addFlow(`priority=${60 + (i % 30)},ip,nw_dst=10.${a}.${b}.0/24,actions=output:2`);
  vs.addFlow(`priority=${30 + (i % 20)},ip,nw_dst=${12 + (i % 200)}.${a}.${b}.0/16,actions=output:3`);
  vs.addFlow(`priority=${200 + (i % 10)},tcp,tp_dst=${1000 + i},actions=output:4`);
  vs.addFlow(`priority=${10 + (i % 5)},dl_dst=02:00:00:00:${(a).toString(16).padStart(2, "0")}:${b.toString(16).padStart(2, "0")},actions=output:1`);
}
const packets = Array.from({ length: 4096 }, (_, i) => parsePacket(`in_port=1,tcp,nw_src=192.168.0.1,nw_dst=10.${(i >> 8) & 7}.${i & 255}.${1 + (i % 2)},tcp_src=5000,tcp_dst=${1000 + (i % 3000)}`));
const flowCount = vs.flows().length;
const wildcard = rate(`classifier, wildcard lookups (trace, no cache), ${flowCount.toLocaleString("en")} rules over 5 masks`, 50_000, (i) => vs.trace(packets[i & 4095]));
// The data plane carries packets as 32-bit words (toWords once, when a packet is made).
const words = packets.map(toWords);
for (const w of words) vs.processWords(w);
const hits = rate("exact-match cache hits (processWords)", 2_000_000, (i) => vs.processWords(words[i & 4095]));
const map = new Map(words.map((w, i) => [i, w]));
const baseline = rate("baseline: a Map.get by number and nothing else", 2_000_000, (i) => map.get(i & 4095));
console.log(`(cache: ${vs.cacheHits} hits, ${vs.cacheMisses} misses)`);
console.log(`cache hits: ${(hits / 5e6).toFixed(2)}x the 5M/s target; wildcard: ${(wildcard / 5e5).toFixed(2)}x the 500k/s target; cache hits are ${(hits / baseline).toFixed(2)}x a bare Map.get`);
