// The "Options" panel of the Chat page: one checkbox per option, saved on the server as soon as
// it changes (options.js). A failed save puts the box back and says why.
import { byId } from './dom.js';
import { DEFAULT_OPTIONS, loadOptions, saveOptions } from './options.js';

export class OptionsPanel {
  /** @param {HTMLFormElement} form  holds one checkbox per option, named like the option */
  constructor(form, status) {
    Object.assign(this, { form, status });
    this.options = { ...DEFAULT_OPTIONS };
    form.addEventListener('change', () => this.save());
    form.addEventListener('submit', (e) => e.preventDefault());
  }

  async load() {
    this.show(await loadOptions());
    this.say('');
  }

  show(options) {
    this.options = options;
    for (const name of Object.keys(DEFAULT_OPTIONS)) {
      const box = this.form.elements.namedItem(name);
      if (box) box.checked = !!options[name];
    }
  }

  async save() {
    const wanted = {};
    for (const name of Object.keys(DEFAULT_OPTIONS)) {
      const box = this.form.elements.namedItem(name);
      wanted[name] = box ? box.checked : !!this.options[name];
    }
    this.say('Saving…');
    try {
      this.show(await saveOptions(wanted));
      this.say('Saved');
    } catch (e) {
      this.show(this.options);
      this.say(e.message, true);
    }
  }

  say(text, error = false) {
    this.status.textContent = text;
    this.status.classList.toggle('error', error);
  }
}

export const optionsPanel = () => new OptionsPanel(byId('options-form'), byId('options-status'));
