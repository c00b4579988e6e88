// Small DOM helpers shared by the pages. Text always goes in as text, never as HTML.

export const byId = (id) => document.getElementById(id);

/** `<tag class=cls>text</tag>`. */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
