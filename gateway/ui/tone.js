// The short tone of the `play_tone` option (options.js): chat windows play it on each new
// message, the Chat page on each incoming chat. Synthesised, so no audio file is needed.

let audio = null;

/** Plays the tone once; does nothing where the browser has no audio. */
export function beep() {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.frequency.value = 880;
    g.gain.setValueAtTime(0.08, audio.currentTime);
    g.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.25);
    o.connect(g).connect(audio.destination);
    o.start();
    o.stop(audio.currentTime + 0.25);
  } catch (_) { /* no audio */ }
}
