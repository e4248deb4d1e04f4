import torch, time, sys, random
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
torch.manual_seed(0); random.seed(0); torch.set_num_threads(1)
layers, lr, fmt, steps = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
V=300; S, IS, DOT, Q, COLON, OF = 1,2,3,4,5,6
RELS = list(range(10, 16)); NAMES = list(range(20, 220))
cfg = GPTNeoXConfig(vocab_size=V, hidden_size=64, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=256, max_position_embeddings=256, tie_word_embeddings=False)
m = GPTNeoXForCausalLM(cfg); opt = torch.optim.AdamW(m.parameters(), lr=lr)
def fact(a, r, b):
    return {'poss':[a,S,r,IS,b,DOT], 'rak':[r,a,b,DOT], 'of':[r,OF,a,IS,b,DOT], 'ark':[a,r,b,DOT]}[fmt]
def query(a, r):
    return {'poss':[Q,COLON,a,S,r,IS], 'rak':[Q,r,a], 'of':[Q,r,OF,a,IS], 'ark':[Q,a,r]}[fmt]
def batch(B=32, n=4):
    seqs=[]; masks=[]
    for _ in range(B):
        names = random.sample(NAMES, 2*n); facts=[]; subj = names[0]; used=set()
        for i in range(n):
            if i>0 and random.random()<0.5: a = subj
            else: a = names[n+i] if i>0 else subj
            r = random.choice([x for x in RELS if (a,x) not in used]); used.add((a,r))
            facts.append((a,r,names[i+1] if i+1 < n else names[1+n-1] if False else names[i] if i>0 else names[n-1+1-1]))
        # ensure unique objects
        objs = random.sample([x for x in NAMES if x not in names], n)
        facts = [(a,r,o) for (a,r,_),o in zip(facts, objs)]
        random.shuffle(facts)
        s=[]; 
        for f in facts: s += fact(*f)
        mk=[0]*len(s)
        for (a,r,o) in random.sample(facts, n):
            q = query(a,r); s += q+[o,DOT]; mk += [0]*len(q)+[1,0]
        seqs.append(torch.tensor(s)); masks.append(torch.tensor(mk))
    return torch.stack(seqs), torch.stack(masks).bool()
t=time.time()
for step in range(steps):
    x, mk = batch()
    logits = m(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1][mk[:,1:]], x[:,1:][mk[:,1:]])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 249:
        with torch.no_grad():
            x, mk = batch(200, 4); lg = m(input_ids=x).logits[:, :-1][mk[:,1:]]
            acc = (lg.argmax(-1) == x[:,1:][mk[:,1:]]).float().mean().item()
        print(sys.argv[1:], step+1, round(loss.item(),3), round(acc,3), round(time.time()-t,1), flush=True)
