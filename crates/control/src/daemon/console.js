// The console's only script: a disruptive action asks first, and a point
// picked on a machine's timeline fills the point fields of its actions.
// Everything works without it (forms post as they are).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
document.addEventListener("click", (event) => {
  const pick = event.target.closest("button.pick");
  if (!pick) return;
  for (const field of document.querySelectorAll("input.point")) field.value = pick.dataset.point;
  for (const picked of document.querySelectorAll("button.pick.picked")) picked.classList.remove("picked");
  pick.classList.add("picked");
});
