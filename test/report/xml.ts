// A strict-enough XML well-formedness check for tests: balanced tags, quoted attributes,
// only known entities, no stray '<' or '&'. (Not a full parser; enough to catch broken output.)
export function assertWellFormedXml(text: string): { elements: string[] } {
  const stack: string[] = [];
  const elements: string[] = [];
  const body = text.replace(/^<\?xml[^?]*\?>\s*/, '');
  const tokenPattern = /<!--[\s\S]*?-->|<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let match: RegExpExecArray | null;
  let lastIndex = 0;
  while ((match = tokenPattern.exec(body)) !== null) {
    if (match.index !== lastIndex) throw new Error(`unparsed text at ${lastIndex}: ${body.slice(lastIndex, lastIndex + 40)}`);
    lastIndex = tokenPattern.lastIndex;
    const [whole, closing, name, attributes, selfClosing, textRun, strayLt] = match;
    if (whole.startsWith('<!--')) continue;
    if (strayLt) throw new Error(`malformed tag at ${match.index}: ${body.slice(match.index, match.index + 60)}`);
    const entityCheck = (s: string) => {
      const bad = s.match(/&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/);
      if (bad) throw new Error(`bare '&' in: ${s.slice(0, 60)}`);
    };
    if (textRun !== undefined) {
      if (stack.length === 0 && textRun.trim()) throw new Error(`text outside the root element: ${textRun.slice(0, 40)}`);
      entityCheck(textRun);
      continue;
    }
    entityCheck(attributes ?? '');
    if (closing) {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}>`);
    } else {
      if (stack.length === 0 && elements.length > 0) throw new Error('more than one root element');
      elements.push(name);
      if (!selfClosing) stack.push(name);
    }
  }
  if (lastIndex !== body.length) throw new Error(`unparsed tail: ${body.slice(lastIndex, lastIndex + 40)}`);
  if (stack.length) throw new Error(`unclosed <${stack.join('>, <')}>`);
  return { elements };
}
