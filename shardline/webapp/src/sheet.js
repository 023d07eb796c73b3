// The cargo sheet laid out for an emergency: what it is, how far to keep back, what to do and
// never do, and whom to call.
import { h } from "./dom.js";

const CLASS_NAMES = {
  1: "explosive",
  2.1: "flammable gas",
  2.2: "non-flammable gas",
  2.3: "toxic gas",
  3: "flammable liquid",
  4.1: "flammable solid",
  4.2: "spontaneously combustible",
  4.3: "dangerous when wet",
  5.1: "oxidiser",
  5.2: "organic peroxide",
  6.1: "toxic",
  6.2: "infectious",
  7: "radioactive",
  8: "corrosive",
  9: "miscellaneous dangerous goods",
};

function classKey(hazardClass) {
  const m = /^(\d)(?:\.(\d))?/.exec(hazardClass);
  if (!m) return "";
  if (m[1] === "1") return "1";
  return m[2] ? `${m[1]}.${m[2]}` : m[1];
}

export function diamond(hazardClass) {
  const key = classKey(hazardClass);
  const name = CLASS_NAMES[key] ?? "dangerous goods";
  return h(
    "div",
    { class: `diamond c${key.replace(".", "-")}`, role: "img", "aria-label": `Hazard class ${hazardClass}: ${name}` },
    h("span", { "aria-hidden": "true" }, hazardClass),
  );
}

function telHref(phone) {
  return `tel:${phone.replace(/[^+\d]/g, "")}`;
}

/** Render a sheet (from the lookup) or a public guide (from a UN number alone). */
export function renderSheet(target, s, { guideOnly = false, note = "" } = {}) {
  const risks = s.subsidiary_risks?.length ? ` (also ${s.subsidiary_risks.join(", ")})` : "";
  const pg = s.packing_group ? ` · packing group ${s.packing_group}` : "";
  const contact = s.emergency_contact;
  const parts = [
    h(
      "div",
      { class: "head" },
      diamond(s.hazard_class),
      h(
        "div",
        { class: "ident" },
        h("p", { class: "un", id: "sheet-un" }, s.un_number),
        h("p", { class: "cls" }, `Class ${s.hazard_class}${risks}${pg}`),
      ),
    ),
    h("p", { class: "psn" }, s.proper_shipping_name),
    note ? h("p", { class: "note", role: "note" }, note) : null,
    h("p", { class: "isolate", id: "sheet-isolate" }, "Isolate at least ", h("strong", {}, `${s.isolate_m} m`), " in all directions"),
    contact
      ? h("a", { class: "call", id: "sheet-call", href: telHref(contact.phone) }, `Call ${contact.name}  ${contact.phone}`)
      : null,
    h(
      "div",
      { class: "lists" },
      h("section", { class: "do", "aria-labelledby": "do-h" }, h("h3", { id: "do-h" }, "Do"), h("ul", { id: "sheet-do" }, s.do.map((x) => h("li", {}, x)))),
      h(
        "section",
        { class: "never", "aria-labelledby": "never-h" },
        h("h3", { id: "never-h" }, "Never"),
        h("ul", { id: "sheet-never" }, s.never.map((x) => h("li", {}, x))),
      ),
    ),
    h("p", { class: "cls" }, `ERG guide ${s.erg_guide}: ${s.erg_title}`),
    guideOnly
      ? null
      : h(
          "dl",
          { class: "facts" },
          fact("Transport", s.transport_id),
          fact("Load", `${s.quantity} ${s.unit} in ${s.packages} × ${s.containment}`),
          fact("Vehicle", `${s.vehicle} · ${s.carrier}`),
          fact("Route", `${s.origin} → ${s.destination}`),
          fact("Departed", s.departure),
          fact("Registered by", s.company),
        ),
    s.sample_data || guideOnly ? h("p", { class: "sample" }, "SAMPLE DATA for demonstration: not for operational use. Consult the current ERG.") : null,
  ];
  target.replaceChildren(...parts.flat().filter(Boolean));
  target.hidden = false;
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}
