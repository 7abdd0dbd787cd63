/**
 * A number of simultaneous HTTP requests shared by several downloads:
 * apply-delta fetches a base and a delta at once, and `--connections N`
 * means N in all, not N each. A download that finishes, or finds its files
 * cached, leaves every connection to the others.
 */
export class ConnectionBudget {
  #free: number;
  readonly #waiters: (() => void)[] = [];

  constructor(readonly size: number) {
    this.#free = size;
  }

  /** Waits for a free connection; false if `signal` aborted first (nothing is then held). */
  async acquire(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return false;
    if (this.#free > 0) {
      this.#free--;
      return true;
    }
    return new Promise<boolean>((resolve) => {
      const granted = () => {
        signal.removeEventListener("abort", aborted);
        resolve(true);
      };
      const aborted = () => {
        const at = this.#waiters.indexOf(granted);
        if (at >= 0) this.#waiters.splice(at, 1);
        resolve(false);
      };
      this.#waiters.push(granted);
      signal.addEventListener("abort", aborted, { once: true });
    });
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next !== undefined) next();
    else this.#free++;
  }
}
