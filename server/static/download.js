// Saving an authorised answer as a file. Plain links cannot carry the bearer header, so
// the body is fetched, becomes a Blob behind a temporary object URL, and a temporary link
// with `download` saves it.

import { apiError, apiFetch, attachmentName } from "./api.js";

/** Download `path` as a file; returns its name, or throws an Error saying what failed. */
export async function download(path, fallbackName) {
  let res;
  try {
    res = await apiFetch(path, { headers: { Accept: "*/*" } });
  } catch {
    throw new Error("the server is unreachable; check your connection and try again");
  }
  if (!res.ok) throw new Error(await apiError(res));
  const blob = await res.blob();
  const name = attachmentName(res, fallbackName);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  try {
    link.click();
  } finally {
    link.remove();
    // The click has started the download; the URL is kept a little for slow browsers.
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
  return name;
}
