document.addEventListener("DOMContentLoaded", () => {
  document.querySelector("h1").title = "served with a versioned URL";
});
