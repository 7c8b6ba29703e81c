function sortBy(th, dir){
  const table = th.closest('table'), body = table.tBodies[0], i = [...th.parentNode.children].indexOf(th);
  const key = tr => { const td = tr.children[i]; const v = td.dataset.v;
    return v !== undefined && v !== '' ? parseFloat(v) : td.textContent.trim(); };
  const rows = [...body.rows];
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x === 'number' && typeof y === 'number') return dir * (x - y);
    if (typeof x === 'number') return -1; if (typeof y === 'number') return 1;
    return dir * String(x).localeCompare(String(y)); });
  rows.forEach(r => body.appendChild(r));
  table.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
}
document.querySelectorAll('table.board th').forEach(th => th.addEventListener('click', () =>
  sortBy(th, th.getAttribute('aria-sort') === 'descending' ? 1 : -1)));
function showSet(key){
  document.querySelectorAll('section.set').forEach(s => { s.hidden = s.dataset.set !== key; });
  document.querySelectorAll('.sets button').forEach(b => b.setAttribute('aria-pressed', b.dataset.set === key));
}
document.querySelectorAll('.sets button').forEach(b => b.addEventListener('click', () => showSet(b.dataset.set)));
if (document.querySelector('section.set')) showSet('iou');
function fromHash(){
  const set = decodeURIComponent(location.hash).match(/^#set=(\w+)$/); if (set) { showSet(set[1]); return; }
  const m = decodeURIComponent(location.hash).match(/^#sort=(.+?)(-asc)?$/); if (!m) return;
  const th = [...document.querySelectorAll('table.board th')].find(h => h.dataset.col === m[1]);
  if (th) sortBy(th, m[2] ? 1 : -1);
}
window.addEventListener('hashchange', fromHash); fromHash();
window.addEventListener('load', () => { const imgs = [...document.images];
  document.body.dataset.images = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length;
  document.body.dataset.width = document.documentElement.scrollWidth + '/' + window.innerWidth; });
document.querySelectorAll('table.board').forEach(table => {
  const heads = [...table.tHead.rows[0].cells];
  if (!heads.some(h => h.classList.contains('x'))) return;
  const picker = document.createElement('details'); picker.className = 'picker';
  picker.innerHTML = '<summary>columns</summary>';
  heads.forEach((th, i) => {
    const label = document.createElement('label'), box = document.createElement('input');
    box.type = 'checkbox'; box.checked = !th.classList.contains('x');
    box.addEventListener('change', () => [th, ...[...table.tBodies[0].rows].map(r => r.children[i])]
      .forEach(cell => cell.classList.toggle('shown', box.checked)));
    if (box.checked) th.classList.add('shown');
    label.append(box, ' ' + th.dataset.col); picker.append(label);
  });
  table.before(picker);
});
