// Parses and validates the Adaptive Card on standard input with Microsoft's own library
// (the renderer Teams clients use) and prints the problems it reports, as a JSON array.
const AC = require("adaptivecards/dist/adaptivecards.js");
const card = JSON.parse(require("fs").readFileSync(0, "utf8"));
const context = new AC.SerializationContext();
const parsed = new AC.AdaptiveCard();
parsed.parse(card, context);
const problems = [];
for (let i = 0; i < context.eventCount; i++) problems.push(context.getEventAt(i).message);
for (const event of parsed.validateProperties().validationEvents) problems.push(event.message);
console.log(JSON.stringify(problems));
